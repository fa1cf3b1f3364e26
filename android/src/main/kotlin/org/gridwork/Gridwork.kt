package org.gridwork

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import uniffi.gridwork_ffi.GridworkStore
import uniffi.gridwork_ffi.SyncProgress
import uniffi.gridwork_ffi.SyncProgressListener
import uniffi.gridwork_ffi.SyncReport
import uniffi.gridwork_ffi.SyncSettings

/**
 * The one place the generated API is awkward for an Android app: `sync` blocks, so it runs on
 * Dispatchers.IO here, and progress arrives as a plain lambda.
 */
suspend fun GridworkStore.syncInBackground(settings: SyncSettings, onProgress: (SyncProgress) -> Unit = {}): SyncReport =
    withContext(Dispatchers.IO) {
        sync(settings, object : SyncProgressListener {
            override fun onProgress(progress: SyncProgress) = onProgress(progress)
        })
    }
