//! Generates the demo's gRPC code from `proto/demo.proto`. protox parses the file in Rust, so
//! no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // Packed relative relocations (DT_RELR, glibc 2.36 and binutils 2.38 on): the proxy's
    // `.rela.dyn`, which the loader reads whole at every start and which then stays resident
    // (about 450 KB), shrinks to a few KB.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-examples=-Wl,-z,pack-relative-relocs");
    }
    let files = protox::compile(["proto/demo.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
