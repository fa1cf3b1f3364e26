// swift-tools-version:6.0
// The Linux harness for the Swift suite (bindings/swift/run-tests.sh copies it, the generated
// bindings and ios/Tests into a Debian trixie chroot). Tools version 6.0: every target compiles in
// Swift 6 language mode, strict concurrency included. The iOS app uses ios/Package.swift instead,
// whose FFI is an XCFramework; only the way the C module is found differs.
import PackageDescription

let package = Package(
    name: "GridworkLinux",
    targets: [
        // The header and module map uniffi-bindgen generates; `link "gridwork_ffi"` in the map.
        .systemLibrary(name: "gridwork_ffiFFI", path: "Sources/gridwork_ffiFFI"),
        .target(
            name: "Gridwork", dependencies: ["gridwork_ffiFFI"], path: "Sources/Gridwork",
            linkerSettings: [.unsafeFlags(["-Llib"])]),
        .testTarget(
            name: "GridworkTests", dependencies: ["Gridwork"], path: "Tests/GridworkTests",
            swiftSettings: [.unsafeFlags(["-warnings-as-errors"])]),
    ]
)
