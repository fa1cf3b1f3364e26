// The Kotlin half of `gridwork-bench ffi`: captures cases through the generated binding, as the
// Android app will, and prints one JSON object with the median per capture. The bench prepares
// the store (catalogue imported) and runs the same calls in Rust in the same run.
// Arguments: DIR KEY_HEX USER DEVICE PHOTO WARMUP N

import java.io.File
import uniffi.gridwork_ffi.*

fun median(samples: List<Double>): Double = samples.sorted()[samples.size / 2]

fun main(args: Array<String>) {
    require(args.size == 7) { "CaptureBench DIR KEY_HEX USER DEVICE PHOTO WARMUP N" }
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
        println("{\"text_p50_ms\":${median(text)},\"photo_p50_ms\":${median(withPhoto)},\"call_p50_ms\":${median(call)},\"n\":$n}")
    }
}
