//! Compiles `proto/*.proto` with protox (pure Rust: no system `protoc` needed) and generates
//! the tonic clients and servers.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/muri.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
