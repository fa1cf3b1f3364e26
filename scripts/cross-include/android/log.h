/* Declarations only, for compile checks of the bundled SQLCipher against aarch64-linux-android
 * without the NDK (scripts/cross-check). SQLCipher logs through these on Android; nothing here is
 * ever linked: a real build uses the NDK's own <android/log.h> and liblog. */
#ifndef GRIDWORK_CROSS_CHECK_ANDROID_LOG_H
#define GRIDWORK_CROSS_CHECK_ANDROID_LOG_H
#include <stdarg.h>
enum { ANDROID_LOG_DEBUG = 3, ANDROID_LOG_INFO = 4, ANDROID_LOG_WARN = 5, ANDROID_LOG_ERROR = 6 };
int __android_log_write(int prio, const char *tag, const char *text);
int __android_log_print(int prio, const char *tag, const char *fmt, ...);
int __android_log_vprint(int prio, const char *tag, const char *fmt, va_list ap);
#endif
