// swift-tools-version:6.0
// The Gridwork core as a Swift package: the generated Swift bindings (Sources/Gridwork, produced by
// generate.sh from the Rust library, never edited by hand), their C FFI module, and the
// XCFramework that build-xcframework.sh makes where Xcode exists. Not built on the CI machine yet:
// see README.md.
import PackageDescription

let package = Package(
    name: "Gridwork",
    platforms: [.iOS(.v15), .macOS(.v13)],
    products: [.library(name: "Gridwork", targets: ["Gridwork"])],
    targets: [
        .binaryTarget(name: "GridworkFFI", path: "GridworkFFI.xcframework"),
        .target(name: "Gridwork", dependencies: ["GridworkFFI"], path: "Sources/Gridwork"),
        .testTarget(name: "GridworkTests", dependencies: ["Gridwork"], path: "Tests/GridworkTests"),
    ]
)
