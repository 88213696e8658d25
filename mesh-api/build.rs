//! Generates the gRPC client and server code from `proto/mesh/*.proto`. protox parses the
//! files in Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(
        [
            "mesh/destination.proto",
            "mesh/identity.proto",
            "mesh/policy.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
