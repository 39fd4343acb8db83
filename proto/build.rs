//! Compiles the protocol's .proto files with protox (pure Rust, no `protoc`) into tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=moe");
    let fds = protox::compile(
        ["moe/expert/v1/expert.proto", "moe/gateway/v1/gateway.proto"],
        ["."],
    )?;
    // The descriptor set, for gRPC reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("moe_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".moe.expert.v1.Tensor.data")
        .compile_fds(fds)?;
    Ok(())
}
