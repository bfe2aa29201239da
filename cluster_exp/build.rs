//! Build script: with the `torch` feature the `muri` binary links libtorch (through
//! muri-workloads), so bake `$LIBTORCH/lib` into its rpath; it then runs without
//! `LD_LIBRARY_PATH`, like `muri-trainer`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}
