//! `cargo run -p gridwork-ffi --features uniffi/cli --bin uniffi-bindgen -- generate --library
//! target/debug/libgridwork_ffi.so --language kotlin --out-dir OUT`
fn main() {
    uniffi::uniffi_bindgen_main()
}
