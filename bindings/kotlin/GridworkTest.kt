// The Kotlin suite: the generated API used the way the Android app will, against a real
// gridwork-sync-server on loopback (started by run-tests.sh, which passes enrolment codes in the
// environment). A plain main() runner: each test runs, failures are printed, the exit status is
// the number of failures.

import java.awt.Color
import java.awt.image.BufferedImage
import java.io.ByteArrayOutputStream
import java.io.File
import java.nio.file.Files
import javax.imageio.ImageIO
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import uniffi.gridwork_ffi.*

fun env(name: String): String = System.getenv(name) ?: error("$name is not set: run bindings/kotlin/run-tests.sh")

val KEY = ByteArray(32) { it.toByte() }
val OTHER_KEY = ByteArray(32) { (it + 1).toByte() }
const val APP = "0.1.0"

/** A real JPEG, as a camera app would hand over. */
fun jpeg(): ByteArray {
    val img = BufferedImage(1600, 1200, BufferedImage.TYPE_INT_RGB)
    val g = img.createGraphics()
    for (i in 0 until 40) {
        g.color = Color((i * 37) % 255, (i * 91) % 255, (i * 53) % 255)
        g.fillRect((i * 97) % 1500, (i * 61) % 1100, 200, 150)
    }
    g.dispose()
    val out = ByteArrayOutputStream()
    check(ImageIO.write(img, "jpg", out)) { "no JPEG writer" }
    return out.toByteArray()
}

fun fix(lat: Double = 31.203, lon: Double = 121.403) =
    GeoFix(lat = lat, lon = lon, accuracyM = 8.0, provider = "fused", mock = false, fixTimeMs = System.currentTimeMillis())

fun tempDir(): String = Files.createTempDirectory("gridwork-kt").toString()

class Phone(val enrolment: Enrolment, val dir: String = tempDir()) {
    constructor(code: String, dir: String = tempDir()) : this(enrol(code, APP), dir)
    val store = GridworkStore.open(dir, KEY, enrolment)
    val settings = SyncSettings(enrolment.server, enrolment.token, enrolment.caFingerprint, APP)
    fun sync(listener: SyncProgressListener? = null) = store.sync(settings, listener)
}

fun wrongKeyAndBadInputAreTypedExceptions() {
    val dir = tempDir()
    val enrolment = Enrolment("http://127.0.0.1:1", null, "d-test", "TST1", "t", "w9", "worker", null)
    GridworkStore.open(dir, KEY, enrolment).close()
    assertFailsWith<GridworkException.WrongKey> { GridworkStore.open(dir, OTHER_KEY, enrolment) }
    GridworkStore.open(dir, KEY, enrolment).use { s ->
        val e = assertFailsWith<GridworkException.InvalidInput> { s.act("not-a-case", CaseAction.Note("x")) }
        assertEquals("case_id", e.field)
        assertFailsWith<GridworkException.NotFound> {
            s.getCase("0190f0c2-0000-7000-8000-000000000000")
        }
    }
    assertFailsWith<GridworkException.InvalidInput> { enrol("K7M2QX", APP) }
}

fun theFieldScenarioThroughTheServer() {
    val worker = Phone(env("GRIDWORK_WORKER_CODE"))
    val supA = Phone(env("GRIDWORK_SUPERVISOR_A_CODE"))
    val supB = Phone(env("GRIDWORK_SUPERVISOR_B_CODE"))
    // The first sync brings the catalogue (grids, categories, departments).
    worker.sync()

    val photo = jpeg()
    // Photo problems are typed: an app tells "take it again" from "convert it" from "too large".
    val advice = listOf(ByteArray(0), "GIF89a....".toByteArray(), photo.copyOf(photo.size / 2)).map { bytes ->
        try {
            worker.store.captureCase(NewCase("照片", "照片", "hazard", "g0", fix(), listOf(bytes)))
            "stored"
        } catch (e: GridworkException) {
            when (e) {
                is GridworkException.PhotoEmpty -> "empty"
                is GridworkException.PhotoUnsupported -> "convert ${e.format}"
                is GridworkException.PhotoCorrupt -> "again"
                is GridworkException.PhotoTooLarge -> "too large"
                else -> "other: $e"
            }
        }
    }
    assertEquals(listOf("empty", "convert unknown", "again"), advice, "each photo problem is its own exception")
    val case = worker.store.captureCase(
        NewCase("楼道堆放杂物", "三楼楼道堆满纸箱，有火灾隐患", "hazard", "g0", fix(), listOf(photo))
    )
    assertEquals("reported", case.status)
    worker.store.captureCase(NewCase("邻里噪音", "夜间噪音", "dispute", "g0", fix(), emptyList()))
    // The grid found from the fix: inside g0, a case without a grid id lands there; 30 m east of
    // its boundary with a 50 m fix, the nearest; kilometres away, the app is asked to choose.
    assertEquals(GridAt("g0", true, 0.0, emptyList()), worker.store.gridAt(fix()))
    val placed = worker.store.captureCase(NewCase("路灯不亮", "路灯不亮", "hazard", null, fix(), emptyList()))
    assertEquals("g0", placed.gridId)
    val nearby = worker.store.gridAt(fix(31.205, 121.41 + 30.0 / 95_300.0).copy(accuracyM = 50.0))
    assertEquals("g0" to false, nearby.gridId to nearby.inside)
    val choose = assertFailsWith<GridworkException.ChooseGrid> {
        worker.store.captureCase(NewCase("远处", "远处", "hazard", null, fix(31.5, 121.9), emptyList()))
    }
    assertEquals(emptyList(), choose.choices, "no grid within a kilometre")

    val found = worker.store.listCases(CaseFilter(emptyList(), null, null, false, false, "楼道", 20u, null))
    assertEquals(listOf(case.id), found.items.map { it.id }, "Chinese search finds the case")
    val byCategory = worker.store.listCases(CaseFilter(emptyList(), null, "dispute", false, false, null, 20u, null))
    assertEquals(1, byCategory.items.size)

    val detail = worker.store.getCase(case.id)
    assertTrue(detail.photos.isNotEmpty(), "the photo is attached")
    val shown = detail.photos.first()
    assertEquals(1600u to 1200u, shown.width to shown.height, "a case screen shows the photo's size")
    assertEquals(PhotoMetadata.ABSENT, shown.metadata, "ImageIO writes no EXIF: said, not guessed")
    assertEquals(null, shown.captureTime)
    assertTrue(detail.editable && detail.readOnlyReason == null, "a worker's own case is editable")
    // The same photo as the file the camera app wrote: read by the core (never through the JVM
    // heap), stored exactly as the bytes were.
    val file = File.createTempFile("IMG_", ".jpg").apply { writeBytes(photo) }
    val fromFile = worker.store.captureCaseFromFiles(
        NewCase("楼道堆放杂物", "同一张照片的文件", "hazard", "g0", fix(), emptyList()), listOf(file.path)
    )
    assertEquals(shown.sha256, worker.store.getCase(fromFile.id).photos.single().sha256, "the file stores as its bytes do")
    val missing = assertFailsWith<GridworkException.PhotoFile> { worker.store.attachPhotoFile(fromFile.id, file.path + ".gone") }
    assertTrue(missing.path.endsWith(".gone"), "the error names the file")
    val stored = worker.store.readPhoto(detail.photos.first().sha256)
    assertTrue(stored.size > 1000 && stored[0] == 0xFF.toByte() && stored[1] == 0xD8.toByte(), "stored photo is a JPEG")

    val patrol = worker.store.startPatrol("g0")
    val checkIn = worker.store.checkIn(NewCheckIn(patrol, "g0-p0", fix(31.202, 121.402), "东门正常", null))
    assertTrue(checkIn.insideGrid)
    val withPhoto = worker.store.checkInWithFile(NewCheckIn(patrol, "g0-p1", fix(31.208, 121.408), "北楼", null), file.path)
    assertTrue(withPhoto.insideGrid, "a check-in's photo handed over as its file")
    assertFailsWith<GridworkException.PhotoFile> {
        worker.store.checkInWithFile(NewCheckIn(patrol, "g0-p1", fix(31.208, 121.408), "北楼", null), file.path + ".gone")
    }
    worker.store.finishPatrol(patrol)

    val progress = mutableListOf<SyncProgress>()
    val pushed = worker.sync(object : SyncProgressListener {
        override fun onProgress(progress0: SyncProgress) { progress.add(progress0) }
    })
    assertTrue(pushed.accepted >= 2u, "cases and records accepted: $pushed")
    assertTrue(pushed.refused.isEmpty(), "nothing refused: ${pushed.refused}")
    assertTrue(progress.isNotEmpty(), "progress reported")
    assertEquals(0uL, worker.store.outboxLen())

    // A worker may not dispatch: typed, nothing stored.
    assertFailsWith<GridworkException.NotAllowed> {
        worker.store.act(case.id, CaseAction.Dispatch(listOf("police"), System.currentTimeMillis() + 86_400_000))
    }

    // Two supervisors decide concurrently, offline: the conflict stays visible.
    val toTriage = supA.sync().needsYou.single { it.what == "to_triage" }.count
    assertTrue(toTriage >= 3uL, "the supervisor's badge counts the worker's new cases: $toTriage")
    assertEquals(toTriage, supA.store.needsYou().single { it.what == "to_triage" }.count, "offline, the same")
    supB.sync()
    supA.store.act(case.id, CaseAction.Accept("核实属实"))
    supB.store.act(case.id, CaseAction.RejectAsOutOfScope("不属本网格"))
    supA.sync(); supB.sync(); supA.sync()
    assertEquals("contested", supA.store.getCase(case.id).summaryStatus, "concurrent accept/reject is contested")

    // The worker's photo on the supervisor's phone: the thumbnail came with the sync, the photo on demand.
    val remote = supA.store.getCase(case.id).photos.first()
    val thumb = supA.store.readPhoto(remote.thumbSha256 ?: error("no thumbnail"))
    assertTrue(thumb[0] == 0xFF.toByte() && thumb[1] == 0xD8.toByte(), "thumbnail is a JPEG")
    assertFailsWith<GridworkException.NotFound> { supA.store.readPhoto(remote.sha256) }
    val full = supA.store.fetchPhoto(supA.settings, remote.sha256)
    assertTrue(full.contentEquals(stored), "the supervisor sees the worker's photo, byte for byte")
    val contested = supA.store.listCases(CaseFilter(listOf("contested"), null, null, false, false, null, 20u, null))
    assertEquals(listOf(case.id), contested.items.map { it.id })

    // A person settles it by choosing the accept, then dispatches.
    val accept = supA.store.getCase(case.id).timeline.first { it.kind == "accept" }
    supA.store.act(case.id, CaseAction.Settle(accept.eventId))
    supA.store.act(case.id, CaseAction.Dispatch(listOf("police"), System.currentTimeMillis() + 86_400_000))
    supA.sync()

    // The supervisor's change arrives on the worker's phone.
    val after = worker.sync()
    assertTrue(after.pulledChanges > 0u)
    val seen = worker.store.getCase(case.id)
    assertEquals("dispatched", seen.summaryStatus, "the dispatch reached the worker")
    assertTrue(seen.timeline.any { it.kind == "dispatch" && it.user == supA.enrolment.user })
}

/**
 * A phone's store copied onto another phone (a device transfer that ignored the backup
 * exclusion) is opened with that phone's own enrolment: its edits carry the new device and a
 * new Automerge actor, so the original and the copy both keep working and nothing is lost.
 */
fun aRestoredStoreEnrolsAgainAndNothingIsLost() {
    val original = Phone(env("GRIDWORK_ORIGINAL_CODE"))
    original.sync()
    val case = original.store.captureCase(NewCase("井盖缺失", "人行道井盖缺失", "hazard", "g0", fix(), emptyList()))
    original.sync()
    original.store.close()

    val copy = tempDir()
    java.io.File(original.dir).copyRecursively(java.io.File(copy), overwrite = true)
    val restored = Phone(env("GRIDWORK_RESTORED_CODE"), copy)
    val reopened = Phone(original.enrolment, original.dir)
    assertTrue(restored.enrolment.deviceId != original.enrolment.deviceId)

    reopened.store.act(case.id, CaseAction.Note("原手机补充：已设置警示"))
    restored.store.act(case.id, CaseAction.Note("新手机补充：已联系物业"))
    val fromRestored = restored.sync()
    assertTrue(fromRestored.refused.isEmpty() && fromRestored.quarantined.isEmpty(), "restored copy: $fromRestored")
    val fromOriginal = reopened.sync()
    assertTrue(fromOriginal.refused.isEmpty() && fromOriginal.quarantined.isEmpty(), "original: $fromOriginal")
    restored.sync()

    for (phone in listOf(reopened.store, restored.store)) {
        val notes = phone.getCase(case.id).timeline.filter { it.kind == "note" }
        assertEquals(
            setOf(original.enrolment.deviceId, restored.enrolment.deviceId),
            notes.map { it.device }.toSet(),
            "both notes, each attributed to its own phone",
        )
    }
}

/**
 * The Android app's vault: AES-GCM under a key that never leaves the keystore. On a phone the key
 * is the Android Keystore's (`KeyGenParameterSpec` with PURPOSE_ENCRYPT | PURPOSE_DECRYPT, see
 * android/README.md); here the JVM's provider holds it, through the same `Cipher` calls.
 */
class JvmVault : KeyVault {
    private var key: javax.crypto.SecretKey? =
        javax.crypto.KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()

    private fun key() = key ?: throw VaultException.Keystore("the key was destroyed")

    override fun wrapKey(plain: ByteArray): ByteArray {
        val c = javax.crypto.Cipher.getInstance("AES/GCM/NoPadding")
        c.init(javax.crypto.Cipher.ENCRYPT_MODE, key())
        return c.iv + c.doFinal(plain)
    }

    override fun unwrapKey(wrapped: ByteArray): ByteArray {
        val c = javax.crypto.Cipher.getInstance("AES/GCM/NoPadding")
        c.init(javax.crypto.Cipher.DECRYPT_MODE, key(), javax.crypto.spec.GCMParameterSpec(128, wrapped, 0, 12))
        return c.doFinal(wrapped, 12, wrapped.size - 12)
    }

    override fun destroyKey() {
        key = null
    }
}

/** The server's admin command line, as an administrator runs it beside the serving server. */
fun admin(vararg args: String) {
    val p = ProcessBuilder(env("GRIDWORK_SERVER_BIN"), "--data-dir", env("GRIDWORK_SERVER_DATA"), "admin", *args)
        .redirectErrorStream(true).start()
    val out = p.inputStream.bufferedReader().readText()
    check(p.waitFor() == 0) { "admin ${args.toList()}: $out" }
}

/**
 * A lost phone is wiped: its store key kept by the app's vault, its unsynced case (with a photo)
 * reaches the server first, then nothing of the store is left and it cannot be opened again.
 */
fun aLostPhoneIsWipedAfterItsUnsyncedWorkReachesTheServer() {
    val enrolment = enrol(env("GRIDWORK_LOST_CODE"), APP)
    val dir = tempDir()
    val vault = JvmVault()
    val settings = SyncSettings(enrolment.server, enrolment.token, enrolment.caFingerprint, APP)
    val store = GridworkStore.openWithVault(dir, vault, enrolment, 14u, null)
    store.sync(settings, null)
    val case = store.captureCase(NewCase("消防通道堵塞", "未同步的案件", "hazard", "g0", fix(), listOf(jpeg())))
    assertTrue(File(dir, "store.key").exists(), "the store key is kept wrapped beside the store")
    assertEquals("active", deviceStatus(settings).status)

    admin("wipe-device", enrolment.deviceId)
    assertEquals("wipe", deviceStatus(settings).status)
    val report = store.sync(settings, null)
    assertTrue(report.wiped && report.wipeReported && report.photosUploaded == 2u, "$report")
    store.close()
    assertEquals(listOf("WIPED"), File(dir).list()!!.toList(), "only the tombstone is left")
    val e = assertFailsWith<GridworkException.Wiped> { GridworkStore.openWithVault(dir, vault, enrolment, 14u, null) }
    assertEquals(enrolment.deviceId, e.device)
    val refused = assertFailsWith<GridworkException.Server> { deviceStatus(settings) }
    assertEquals("device_wiped", refused.code)
    // The case it never synced before the order is on the server, with its photo.
    val bundle = File(tempDir(), "case.json")
    admin("export-case", case.id, "--out", bundle.path)
    assertTrue(bundle.readText().contains(case.id), "the wiped phone's case is on the server")
}

fun main() {
    val tests = listOf(
        "a lost phone is wiped after its unsynced work reaches the server" to
            ::aLostPhoneIsWipedAfterItsUnsyncedWorkReachesTheServer,
        "wrong key and bad input are typed exceptions" to ::wrongKeyAndBadInputAreTypedExceptions,
        "the field scenario through the server" to ::theFieldScenarioThroughTheServer,
        "a restored store enrols again and nothing is lost" to ::aRestoredStoreEnrolsAgainAndNothingIsLost,
    )
    var failed = 0
    for ((name, test) in tests) {
        try {
            test()
            println("ok   $name")
        } catch (t: Throwable) {
            failed++
            println("FAIL $name: $t")
            t.printStackTrace()
        }
    }
    println("kotlin: ${tests.size - failed} passed, $failed failed")
    kotlin.system.exitProcess(failed)
}
