// The Swift suite: the generated API used the way the iOS app will, against a real
// gridwork-sync-server on loopback. On Linux, bindings/swift/run-tests.sh starts the server, passes
// the enrolment codes and the fixture photo in the environment, and runs this file inside a Debian
// trixie chroot with Swift 6 (language mode 6). The same scenario as bindings/kotlin/GridworkTest.kt.

import Foundation
import Gridwork
import XCTest

private let appVersion = "0.1.0"
private let key = Data((0..<32).map { UInt8($0) })
private let otherKey = Data((0..<32).map { UInt8($0 + 1) })

/// A missing variable fails the test (never skips it): the suite is only meaningful with a server.
private struct MissingEnvironment: Error, CustomStringConvertible {
    let name: String
    var description: String { "\(name) is not set: run bindings/swift/run-tests.sh" }
}

private func env(_ name: String) throws -> String {
    guard let value = ProcessInfo.processInfo.environment[name] else { throw MissingEnvironment(name: name) }
    return value
}

private func tempDir() throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("gridwork-swift-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

private func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

private func fix(lat: Double = 31.203, lon: Double = 121.403) -> GeoFix {
    GeoFix(lat: lat, lon: lon, accuracyM: 8.0, provider: "fused", mock: false, fixTimeMs: nowMs())
}

private func filter(statuses: [String] = [], categoryId: String? = nil, text: String? = nil) -> CaseFilter {
    CaseFilter(
        statuses: statuses, gridId: nil, categoryId: categoryId, assignedToMe: false, overdue: false, text: text,
        limit: 20, after: nil)
}

/// Progress callbacks arrive on the thread that runs `sync`; the lock makes the class Sendable.
private final class ProgressLog: SyncProgressListener, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [SyncProgress] = []
    func onProgress(progress: SyncProgress) { lock.withLock { events.append(progress) } }
    var count: Int { lock.withLock { events.count } }
}

private struct Phone {
    let enrolment: Enrolment
    let dir: String
    let store: GridworkStore
    let settings: SyncSettings

    init(codeVariable: String, dir: String? = nil) throws {
        try self.init(enrolment: try enrol(enrolmentCode: try env(codeVariable), appVersion: appVersion), dir: dir)
    }

    init(enrolment: Enrolment, dir: String? = nil) throws {
        self.enrolment = enrolment
        self.dir = try dir ?? tempDir()
        store = try GridworkStore.open(dir: self.dir, key: key, enrolment: enrolment)
        settings = SyncSettings(
            server: enrolment.server, token: enrolment.token, caFingerprint: enrolment.caFingerprint,
            appVersion: appVersion)
    }

    @discardableResult
    func sync(_ listener: SyncProgressListener? = nil) throws -> SyncReport {
        try store.sync(settings: settings, listener: listener)
    }
}

/// A vault the way the iOS app's Keychain gives one: the store key lives in the keystore and the
/// file beside the store holds only a reference to it; destroying the item shreds the store. On a
/// phone the item is a `kSecClassGenericPassword` with `kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly`
/// (or the key sealed by a Secure Enclave P-256 key; see ios/README.md); here a table in memory
/// plays the Keychain.
private final class MemoryKeychainVault: KeyVault, @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Data: Data] = [:]

    func wrapKey(plain: Data) throws -> Data {
        let reference = Data((0..<16).map { _ in UInt8.random(in: 0...255) })
        lock.withLock { items[reference] = plain }
        return reference
    }

    func unwrapKey(wrapped: Data) throws -> Data {
        guard let plain = lock.withLock({ items[wrapped] }) else {
            throw VaultError.Keystore(detail: "no such item in the keychain")
        }
        return plain
    }

    func destroyKey() throws {
        lock.withLock { items.removeAll() }
    }
}

final class GridworkTests: XCTestCase {
    func testAStoreKeptByAKeychainVaultOpensOnlyThroughIt() throws {
        let dir = try tempDir()
        let enrolment = Enrolment(
            server: "http://127.0.0.1:1", caFingerprint: nil, deviceId: "d-vault", deviceCode: "TST2", token: "t",
            user: "w9", role: "worker", department: nil)
        let vault = MemoryKeychainVault()
        _ = try GridworkStore.openWithVault(
            dir: dir, vault: vault, enrolment: enrolment, offlineLimitDays: 14, checkedInMs: nil)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/store.key"), "the key is kept, wrapped")
        _ = try GridworkStore.openWithVault(
            dir: dir, vault: vault, enrolment: enrolment, offlineLimitDays: 14, checkedInMs: nil)
        for other in [MemoryKeychainVault(), vault] {
            if other === vault { try vault.destroyKey() }
            XCTAssertThrowsError(
                try GridworkStore.openWithVault(
                    dir: dir, vault: other, enrolment: enrolment, offlineLimitDays: 14, checkedInMs: nil)
            ) { error in
                guard case GridworkError.Vault = error else { return XCTFail("expected Vault, got \(error)") }
            }
        }
    }

    func testWrongKeyAndBadInputAreTypedErrors() throws {
        let dir = try tempDir()
        let enrolment = Enrolment(
            server: "http://127.0.0.1:1", caFingerprint: nil, deviceId: "d-test", deviceCode: "TST1", token: "t",
            user: "w9", role: "worker", department: nil)
        // Opened and released at once: the store is closed when its last reference goes.
        _ = try GridworkStore.open(dir: dir, key: key, enrolment: enrolment)
        XCTAssertThrowsError(try GridworkStore.open(dir: dir, key: otherKey, enrolment: enrolment)) { error in
            guard case GridworkError.WrongKey = error else { return XCTFail("expected WrongKey, got \(error)") }
        }
        let store = try GridworkStore.open(dir: dir, key: key, enrolment: enrolment)
        XCTAssertThrowsError(try store.act(caseId: "not-a-case", action: .note(text: "x"))) { error in
            guard case GridworkError.InvalidInput(let field, _) = error else {
                return XCTFail("expected InvalidInput, got \(error)")
            }
            XCTAssertEqual(field, "case_id")
        }
        XCTAssertThrowsError(try store.getCase(caseId: "0190f0c2-0000-7000-8000-000000000000")) { error in
            guard case GridworkError.NotFound = error else { return XCTFail("expected NotFound, got \(error)") }
        }
        XCTAssertThrowsError(try enrol(enrolmentCode: "K7M2QX", appVersion: appVersion)) { error in
            guard case GridworkError.InvalidInput = error else { return XCTFail("expected InvalidInput, got \(error)") }
        }
    }

    func testTheFieldScenarioThroughTheServer() throws {
        let worker = try Phone(codeVariable: "GRIDWORK_WORKER_CODE")
        let supA = try Phone(codeVariable: "GRIDWORK_SUPERVISOR_A_CODE")
        let supB = try Phone(codeVariable: "GRIDWORK_SUPERVISOR_B_CODE")
        // The first sync brings the catalogue (grids, categories, departments).
        try worker.sync()

        let photo = try Data(contentsOf: URL(fileURLWithPath: try env("GRIDWORK_PHOTO")))
        XCTAssertEqual(Array(photo.prefix(2)), [0xFF, 0xD8], "the fixture is a JPEG")
        // Photo problems are typed: an app tells "take it again" from "convert it" from "too large".
        func advice(_ bytes: Data) -> String {
            do {
                _ = try worker.store.captureCase(
                    newCase: NewCase(
                        title: "照片", description: "照片", categoryId: "hazard", gridId: "g0", location: fix(),
                        photos: [bytes]))
                return "stored"
            } catch let error as GridworkError {
                switch error {
                case .PhotoEmpty: return "empty"
                case .PhotoUnsupported(let format, _): return "convert \(format)"
                case .PhotoCorrupt: return "again"
                case .PhotoTooLarge: return "too large"
                default: return "other: \(error)"
                }
            } catch {
                return "other: \(error)"
            }
        }
        XCTAssertEqual(
            [Data(), Data("GIF89a....".utf8), Data(photo.prefix(photo.count / 2))].map(advice),
            ["empty", "convert unknown", "again"], "each photo problem is its own error")
        let reported = try worker.store.captureCase(
            newCase: NewCase(
                title: "楼道堆放杂物", description: "三楼楼道堆满纸箱，有火灾隐患", categoryId: "hazard", gridId: "g0",
                location: fix(), photos: [photo]))
        XCTAssertEqual(reported.status, "reported")
        _ = try worker.store.captureCase(
            newCase: NewCase(
                title: "邻里噪音", description: "夜间噪音", categoryId: "dispute", gridId: "g0", location: fix(),
                photos: []))

        // The grid found from the fix: inside g0, a case without a grid id lands there; far away,
        // the app is asked to choose.
        XCTAssertEqual(try worker.store.gridAt(location: fix()).gridId, "g0")
        let placed = try worker.store.captureCase(
            newCase: NewCase(
                title: "路灯不亮", description: "路灯不亮", categoryId: "hazard", gridId: nil, location: fix(),
                photos: []))
        XCTAssertEqual(placed.gridId, "g0")
        XCTAssertThrowsError(
            try worker.store.captureCase(
                newCase: NewCase(
                    title: "远处", description: "远处", categoryId: "hazard", gridId: nil,
                    location: fix(lat: 31.5, lon: 121.9), photos: []))
        ) { error in
            guard case GridworkError.ChooseGrid(let choices) = error else {
                return XCTFail("expected ChooseGrid, got \(error)")
            }
            XCTAssertEqual(choices, [], "no grid within a kilometre")
        }
        XCTAssertEqual(try worker.store.listCases(filter: filter(text: "楼道")).items.map(\.id), [reported.id])
        XCTAssertEqual(try worker.store.listCases(filter: filter(categoryId: "dispute")).items.count, 1)

        let detail = try worker.store.getCase(caseId: reported.id)
        XCTAssertTrue(detail.editable, "a worker's own case is editable")
        XCTAssertNil(detail.readOnlyReason)
        let first = try XCTUnwrap(detail.photos.first, "the photo is attached")
        XCTAssertTrue(first.width > 0 && first.height > 0, "a case screen shows the photo's size")
        XCTAssertNotEqual(first.metadata, .notRecorded, "what the photo's metadata yielded is recorded")
        // The same photo as the file the camera wrote: read by the core, stored exactly as the
        // bytes were; a missing file is its own error.
        let fileURL = URL(fileURLWithPath: try tempDir()).appendingPathComponent("IMG_0001.jpg")
        try photo.write(to: fileURL)
        let fromFile = try worker.store.captureCaseFromFiles(
            newCase: NewCase(
                title: "楼道堆放杂物", description: "同一张照片的文件", categoryId: "hazard", gridId: "g0",
                location: fix(), photos: []),
            photoFiles: [fileURL.path])
        XCTAssertEqual(try worker.store.getCase(caseId: fromFile.id).photos.map(\.sha256), [first.sha256])
        XCTAssertThrowsError(try worker.store.attachPhotoFile(caseId: fromFile.id, path: fileURL.path + ".gone")) {
            error in
            guard case GridworkError.PhotoFile(let path, _) = error else {
                return XCTFail("expected PhotoFile, got \(error)")
            }
            XCTAssertTrue(path.hasSuffix(".gone"), "the error names the file")
        }
        let stored = try worker.store.readPhoto(sha256: first.sha256)
        XCTAssertGreaterThan(stored.count, 1000)
        XCTAssertEqual(Array(stored.prefix(2)), [0xFF, 0xD8], "the stored photo is a JPEG")

        let patrol = try worker.store.startPatrol(gridId: "g0")
        let checkIn = try worker.store.checkIn(
            checkIn: NewCheckIn(
                patrolId: patrol, pointId: "g0-p0", location: fix(lat: 31.202, lon: 121.402), note: "东门正常",
                photo: nil))
        XCTAssertTrue(checkIn.insideGrid)
        try worker.store.finishPatrol(patrolId: patrol)

        let progress = ProgressLog()
        let pushed = try worker.sync(progress)
        XCTAssertGreaterThanOrEqual(pushed.accepted, 2, "cases and records accepted: \(pushed)")
        XCTAssertEqual(pushed.refused, [], "nothing refused")
        XCTAssertGreaterThan(progress.count, 0, "progress reported")
        XCTAssertEqual(try worker.store.outboxLen(), 0)

        // A worker may not dispatch: typed, nothing stored.
        XCTAssertThrowsError(
            try worker.store.act(
                caseId: reported.id, action: .dispatch(departmentIds: ["police"], deadlineMs: nowMs() + 86_400_000))
        ) { error in
            guard case GridworkError.NotAllowed = error else { return XCTFail("expected NotAllowed, got \(error)") }
        }

        // Two supervisors decide concurrently, offline: the conflict stays visible.
        try supA.sync()
        try supB.sync()
        _ = try supA.store.act(caseId: reported.id, action: .accept(note: "核实属实"))
        _ = try supB.store.act(caseId: reported.id, action: .rejectAsOutOfScope(note: "不属本网格"))
        try supA.sync()
        try supB.sync()
        try supA.sync()
        XCTAssertEqual(try supA.store.getCase(caseId: reported.id).summaryStatus, "contested")

        // The worker's photo on the supervisor's phone: the thumbnail came with the sync, the
        // photo on demand.
        let remote = try XCTUnwrap(try supA.store.getCase(caseId: reported.id).photos.first)
        let thumb = try supA.store.readPhoto(sha256: try XCTUnwrap(remote.thumbSha256))
        XCTAssertEqual(Array(thumb.prefix(2)), [0xFF, 0xD8], "the thumbnail is a JPEG")
        XCTAssertThrowsError(try supA.store.readPhoto(sha256: remote.sha256)) { error in
            guard case GridworkError.NotFound = error else { return XCTFail("expected NotFound, got \(error)") }
        }
        let full = try supA.store.fetchPhoto(settings: supA.settings, sha256: remote.sha256)
        XCTAssertEqual(full, stored, "the supervisor sees the worker's photo, byte for byte")
        XCTAssertEqual(
            try supA.store.listCases(filter: filter(statuses: ["contested"])).items.map(\.id), [reported.id])

        // A person settles it by choosing the accept, then dispatches.
        let accept = try XCTUnwrap(try supA.store.getCase(caseId: reported.id).timeline.first { $0.kind == "accept" })
        _ = try supA.store.act(caseId: reported.id, action: .settle(chosenEventId: accept.eventId))
        _ = try supA.store.act(
            caseId: reported.id, action: .dispatch(departmentIds: ["police"], deadlineMs: nowMs() + 86_400_000))
        try supA.sync()

        // The supervisor's change arrives on the worker's phone.
        let after = try worker.sync()
        XCTAssertGreaterThan(after.pulledChanges, 0)
        let seen = try worker.store.getCase(caseId: reported.id)
        XCTAssertEqual(seen.summaryStatus, "dispatched", "the dispatch reached the worker")
        XCTAssertTrue(seen.timeline.contains { $0.kind == "dispatch" && $0.user == supA.enrolment.user })
    }

    /// A phone's store copied onto another phone (a device transfer that ignored the backup
    /// exclusion) is opened with that phone's own enrolment: its edits carry the new device and a
    /// new Automerge actor, so the original and the copy both keep working and nothing is lost.
    func testARestoredStoreEnrolsAgainAndNothingIsLost() throws {
        var original: Phone? = try Phone(codeVariable: "GRIDWORK_ORIGINAL_CODE")
        let originalEnrolment = try XCTUnwrap(original).enrolment
        let originalDir = try XCTUnwrap(original).dir
        try original?.sync()
        let reported = try XCTUnwrap(original).store.captureCase(
            newCase: NewCase(
                title: "井盖缺失", description: "人行道井盖缺失", categoryId: "hazard", gridId: "g0", location: fix(),
                photos: []))
        try original?.sync()
        original = nil  // the app stops: its store is closed

        let copy = try tempDir() + "/restored"
        try FileManager.default.copyItem(atPath: originalDir, toPath: copy)
        let restored = try Phone(codeVariable: "GRIDWORK_RESTORED_CODE", dir: copy)
        let reopened = try Phone(enrolment: originalEnrolment, dir: originalDir)
        XCTAssertNotEqual(restored.enrolment.deviceId, originalEnrolment.deviceId)

        _ = try reopened.store.act(caseId: reported.id, action: .note(text: "原手机补充：已设置警示"))
        _ = try restored.store.act(caseId: reported.id, action: .note(text: "新手机补充：已联系物业"))
        for phone in [restored, reopened] {
            let report = try phone.sync()
            XCTAssertEqual(report.refused, [], "nothing refused")
            XCTAssertEqual(report.quarantined, [], "nothing quarantined")
        }
        try restored.sync()

        for phone in [reopened, restored] {
            let notes = try phone.store.getCase(caseId: reported.id).timeline.filter { $0.kind == "note" }
            XCTAssertEqual(
                Set(notes.map(\.device)), [originalEnrolment.deviceId, restored.enrolment.deviceId],
                "both notes, each attributed to its own phone")
        }
    }
}
