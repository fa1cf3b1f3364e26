// The Kotlin half of `gridwork-bench ffi`: captures cases through the generated binding, as the
// Android app will, and prints one JSON object with the median per capture. The bench prepares
// the store (catalogue imported) and runs the same calls in Rust in the same run.
// Arguments: DIR KEY_HEX USER DEVICE PHOTO WARMUP N PHOTO_12MP
//
// It also compares the two ways an app can hand over a photo the camera wrote to a file: read
// into a ByteArray and passed (`captureCase`), or passed as its path (`captureCaseFromFiles`).
// For each, the JVM heap the app allocates per capture (this thread's allocated bytes) and the
// process's peak resident memory over the captures (VmHWM, reset first through clear_refs).

import java.io.File
import java.lang.management.ManagementFactory
import uniffi.gridwork_ffi.*

fun median(samples: List<Double>): Double = samples.sorted()[samples.size / 2]

/** Bytes this thread has allocated on the JVM heap so far (HotSpot's ThreadMXBean). */
fun allocatedBytes(): Long =
    (ManagementFactory.getThreadMXBean() as com.sun.management.ThreadMXBean).currentThreadAllocatedBytes

/** Resets the process's peak resident memory (Linux: `5` to clear_refs), so VmHWM starts over. */
fun resetPeak() = File("/proc/self/clear_refs").writeText("5")

/** The process's peak resident memory since the last reset, in MB. */
fun peakMb(): Double =
    File("/proc/self/status").readLines().first { it.startsWith("VmHWM:") }.split(Regex("\\s+"))[1].toDouble() / 1024

fun main(args: Array<String>) {
    require(args.size == 8) { "CaptureBench DIR KEY_HEX USER DEVICE PHOTO WARMUP N PHOTO_12MP" }
    val (dir, keyHex, user, device, photoPath) = args
    val warmup = args[5].toInt()
    val n = args[6].toInt()
    val key = keyHex.chunked(2).map { it.toInt(16).toByte() }.toByteArray()
    val photo = File(photoPath).readBytes()
    val enrolment = Enrolment("http://127.0.0.1:1", null, device, "BENCH", "t", user, "worker", null)
    GridworkStore.open(dir, key, enrolment).use { store ->
        fun capture(i: Int, photos: List<ByteArray>): Double {
            val fix = GeoFix(31.2005, 121.4005, 8.0, "gps", false, System.currentTimeMillis())
            val start = System.nanoTime()
            store.captureCase(NewCase("楼道堆物 $i", "三楼楼道堆满纸箱 $i", "hazard", "g0", fix, photos))
            return (System.nanoTime() - start) / 1e6
        }
        // The JIT compiles the binding's hot paths during the warm-up; those samples are dropped.
        repeat(warmup) { capture(it, emptyList()) }
        val text = (0 until n).map { capture(it, emptyList()) }
        repeat(warmup / 4 + 1) { capture(it, listOf(photo)) }
        val withPhoto = (0 until n).map { capture(it, listOf(photo)) }
        // The crossing alone: a call that does almost nothing in Rust (one indexed count).
        repeat(warmup) { store.outboxLen() }
        val call = (0 until n).map {
            val start = System.nanoTime()
            store.outboxLen()
            (System.nanoTime() - start) / 1e6
        }
        // A photo from the camera's file, both ways: the heap the app allocates per capture, and
        // the process's peak. The bytes way reads the file as the app would before the call.
        val file = File(args[7])
        fun fromBytes(i: Int) = store.captureCase(
            NewCase("楼道堆物 $i", "三楼楼道堆满纸箱 $i", "hazard", "g0", GeoFix(31.2005, 121.4005, 8.0, "gps", false, System.currentTimeMillis()), listOf(file.readBytes()))
        )
        fun fromFile(i: Int) = store.captureCaseFromFiles(
            NewCase("楼道堆物 $i", "三楼楼道堆满纸箱 $i", "hazard", "g0", GeoFix(31.2005, 121.4005, 8.0, "gps", false, System.currentTimeMillis()), emptyList()),
            listOf(file.path)
        )
        val rounds = 8
        fun measure(capture: (Int) -> Unit): Triple<Double, Double, Double> {
            repeat(2) { capture(it) }
            System.gc()
            resetPeak()
            val before = allocatedBytes()
            val times = (0 until rounds).map {
                val start = System.nanoTime()
                capture(it)
                (System.nanoTime() - start) / 1e6
            }
            val heap = (allocatedBytes() - before).toDouble() / rounds
            return Triple(heap, peakMb(), median(times))
        }
        val (bytesHeap, bytesPeak, bytesP50) = measure { fromBytes(it) }
        val (fileHeap, filePeak, fileP50) = measure { fromFile(it) }
        println(
            "{\"text_p50_ms\":${median(text)},\"photo_p50_ms\":${median(withPhoto)},\"call_p50_ms\":${median(call)},\"n\":$n," +
                "\"bytes_heap_per_capture\":$bytesHeap,\"bytes_peak_rss_mb\":$bytesPeak,\"bytes_p50_ms\":$bytesP50," +
                "\"file_heap_per_capture\":$fileHeap,\"file_peak_rss_mb\":$filePeak,\"file_p50_ms\":$fileP50,\"rounds\":$rounds}"
        )
    }
}
