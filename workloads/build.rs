//! Build script: with the `torch` feature, bake libtorch's directory into the binaries'
//! rpath so `muri-trainer` and the tests start without `LD_LIBRARY_PATH`.

fn main() {
    // Any `rerun-if` line turns off cargo's default of rerunning on every change in the
    // package; an edited build.rs is rebuilt and rerun regardless. Not
    // `rerun-if-changed=build.rs`: gpu/Cargo.toml runs this script from another package
    // root, where that path does not exist, so cargo would rerun it and relink every build.
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}
