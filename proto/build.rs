//! Compiles the protocol's .proto files with protox (pure Rust, no `protoc`) into tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=moe");
    let fds = protox::compile(["moe/expert/v1/expert.proto"], ["."])?;
    tonic_prost_build::configure()
        .bytes(".moe.expert.v1.Tensor.data")
        .compile_fds(fds)?;
    Ok(())
}
