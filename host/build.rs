//! The admin UI's bundle (`web/dist/`, built by `cargo xtask build-web` from `web/src` and
//! `web/styles`) is embedded into the binary: say how to build it when it is missing,
//! rather than failing on an unreadable `include_bytes!`.

fn main() {
    // Read when the script runs, not when it is compiled (`env!`): Cargo reuses one compiled
    // build script for every checkout of this workspace that shares a target directory.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dist = std::path::Path::new(&manifest_dir).join("../web/dist");
    for file in ["app.js", "app.css"] {
        let path = dist.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        if !path.exists() {
            panic!(
                "{} is missing: build the admin UI's bundle first with `cargo xtask build-web` \
                 (needs Node.js and npm; `cargo xtask test` and `cargo xtask demo` do it)",
                path.display()
            );
        }
    }
}
