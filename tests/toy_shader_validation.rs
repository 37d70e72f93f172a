//! Every toy-model WGSL kernel is parsed and validated by naga and
//! translated to SPIR-V, MSL, HLSL and GLSL, without a GPU: a shader that
//! one backend would reject fails here first.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_gradclip::toy::kernels::{
    Kernel, ATTENTION_WORKGROUP_SIZE, GRAD_WEIGHT_WORKGROUP_SIZE, LINEAR_TILE,
    LINEAR_WORKGROUP_SIZE, MAX_ATTENTION_LEN, MAX_HEAD_DIM, NONE, WORKGROUP_SIZE,
};

fn check_module(name: &str, source: &str, entry: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: parse error\n{}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error\n{}", e.emit_to_string(source)));

    // WebGPU's default limit on workgroup memory.
    let shared: u32 = module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
        .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
        .sum();
    assert!(
        shared <= 16384,
        "{name}: {shared} bytes of workgroup memory"
    );

    spv::write_vec(
        &module,
        &info,
        &spv::Options::default(),
        Some(&spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: entry.into(),
        }),
    )
    .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));

    msl::write_string(
        &module,
        &info,
        &msl::Options::default(),
        &msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, entry.into())),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));

    let mut hlsl_out = String::new();
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.into())),
    };
    hlsl::Writer::new(&mut hlsl_out, &hlsl::Options::default(), &hlsl_pipeline)
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name}: HLSL: {e}"));

    let mut glsl_out = String::new();
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.into(),
        multiview: None,
    };
    glsl::Writer::new(
        &mut glsl_out,
        &module,
        &info,
        &glsl::Options::default(),
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write())
    .unwrap_or_else(|e| panic!("{name}: GLSL: {e}"));
}

#[test]
fn toy_kernels_validate_and_translate_everywhere() {
    for kernel in Kernel::ALL {
        check_module(kernel.name(), &kernel.source(), kernel.name());
    }
}

#[test]
fn every_toy_shader_file_is_a_registered_kernel() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/toy");
    for entry in std::fs::read_dir(dir).expect("shaders/toy exists") {
        let name = entry
            .expect("readable entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        let stem = name.strip_suffix(".wgsl").expect("only .wgsl files");
        let source = std::fs::read_to_string(format!("{dir}/{name}")).expect("readable shader");
        assert!(
            source.starts_with("// "),
            "{name} must open with a line saying what it computes"
        );
        if stem != "common" {
            let known = Kernel::ALL.iter().any(|k| k.source().ends_with(&source));
            assert!(
                known && Kernel::ALL.iter().any(|k| k.name() == stem),
                "{name} is not in Kernel::ALL"
            );
        }
    }
}

#[test]
fn rust_constants_mirror_wgsl() {
    let common = Kernel::Linear.source();
    assert!(common.contains(&format!("const WG: u32 = {WORKGROUP_SIZE}u;")));
    assert!(common.contains(&format!("const NONE: u32 = 0x{NONE:x}u;")));
    assert!(common.contains(&format!("const TILE: u32 = {LINEAR_TILE}u;")));
    assert!(common.contains(&format!("const LWG: u32 = {LINEAR_WORKGROUP_SIZE}u;")));
    let gw = Kernel::LinearGradWeight.source();
    assert!(gw.contains(&format!("const LWG: u32 = {GRAD_WEIGHT_WORKGROUP_SIZE}u;")));
    let attn = Kernel::Attention.source();
    assert!(attn.contains(&format!("const MAX_T: u32 = {MAX_ATTENTION_LEN}u;")));
    assert!(attn.contains(&format!("const MAX_DH: u32 = {MAX_HEAD_DIM}u;")));
    for k in [Kernel::Attention, Kernel::AttentionBackward] {
        let src = k.source();
        assert!(src.contains(&format!("const AWG: u32 = {ATTENTION_WORKGROUP_SIZE}u;")));
    }
}
