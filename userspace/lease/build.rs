//! Links libsanlock_client (Debian package libsanlock-dev; `cargo xtask setup` installs it).
fn main() {
    println!("cargo:rustc-link-lib=dylib=sanlock_client");
    println!("cargo:rerun-if-changed=build.rs");
}
