//! Every toy-model WGSL kernel is parsed and validated by naga and
//! translated to SPIR-V, MSL, HLSL and GLSL, without a GPU: a shader that
//! one backend would reject fails here first.

mod naga_check;

use naga::valid::Capabilities;
use naga_check::check_module_with;
use wgpu_gradclip::toy::kernels::{
    Kernel, ATTENTION_WORKGROUP_SIZE, GRAD_WEIGHT_SUBGROUP_BLOCK, GRAD_WEIGHT_WORKGROUP_SIZE,
    LINEAR_SUBGROUP_COLS, LINEAR_SUBGROUP_ROWS, LINEAR_TILE, LINEAR_WORKGROUP_SIZE,
    MAX_ATTENTION_LEN, MAX_HEAD_DIM, NONE, SUBGROUP_LANES, WORKGROUP_SIZE,
};

/// What a kernel asks of the device: subgroup operations for the
/// subgroup kernels, nothing beyond WebGPU for the rest.
fn capabilities(kernel: Kernel) -> Capabilities {
    if kernel.needs_subgroups() {
        Capabilities::SUBGROUP
    } else {
        Capabilities::empty()
    }
}

#[test]
fn toy_kernels_validate_and_translate_everywhere() {
    for kernel in Kernel::ALL {
        check_module_with(
            kernel.name(),
            &kernel.source(),
            &[kernel.name()],
            &[],
            capabilities(kernel),
        );
    }
}

#[test]
fn only_the_subgroup_kernels_need_subgroups() {
    for kernel in Kernel::ALL {
        assert_eq!(
            kernel.needs_subgroups(),
            kernel.source().contains("subgroup_invocation_id"),
            "{kernel:?}"
        );
    }
    assert!(Kernel::ALL.iter().any(|k| k.needs_subgroups()));
}

/// Every specialisation the model can ask for translates too: the weight
/// layouts, prologues and epilogues of `Linear` with every set of flags,
/// both modes of `LinearGradWeight`, and each mask of the attention
/// kernels.
#[test]
fn toy_kernel_variants_validate_and_translate_everywhere() {
    for kernel in [Kernel::Linear, Kernel::LinearSubgroup] {
        let source = kernel.source();
        for w_t in 0..2 {
            for pro in [0, 2] {
                for epi in 0..4 {
                    // Every subset of ADD (2), ACCUM (4), AUX (8) and the
                    // vec4 epilogue (16).
                    for flags in (0..16).map(|f| f << 1) {
                        let variant = w_t | pro << 1 | epi << 3 | flags << 8;
                        let constants = kernel.constants(variant);
                        assert_eq!(constants.len(), 4);
                        check_module_with(
                            kernel.name(),
                            &source,
                            &[kernel.name()],
                            &constants,
                            capabilities(kernel),
                        );
                    }
                }
            }
        }
    }
    for kernel in [Kernel::LinearGradWeight, Kernel::LinearGradWeightSubgroup] {
        let source = kernel.source();
        for variant in 0..2 {
            check_module_with(
                kernel.name(),
                &source,
                &[kernel.name()],
                &kernel.constants(variant),
                capabilities(kernel),
            );
        }
    }
    for kernel in [
        Kernel::Attention,
        Kernel::AttentionBackward,
        Kernel::AttentionSubgroup,
        Kernel::AttentionBackwardSubgroup,
    ] {
        let source = kernel.source();
        for mask in 0..3 {
            check_module_with(
                kernel.name(),
                &source,
                &[kernel.name()],
                &kernel.constants(mask),
                capabilities(kernel),
            );
        }
    }
}

/// For a prelude file (no entry point of its own), which kernels' modules
/// must include it; None for a kernel's own file.
fn prelude_users(stem: &str) -> Option<fn(Kernel) -> bool> {
    match stem {
        "common" => Some(|_| true),
        "attention_common" => Some(|k| {
            matches!(
                k,
                Kernel::Attention
                    | Kernel::AttentionBackward
                    | Kernel::AttentionSubgroup
                    | Kernel::AttentionBackwardSubgroup
            )
        }),
        "subgroup_common" => Some(Kernel::needs_subgroups),
        _ => None,
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
        if let Some(users) = prelude_users(stem) {
            // A prelude: in the modules of exactly the kernels that use it.
            for k in Kernel::ALL {
                assert_eq!(
                    k.source().contains(&source),
                    users(k),
                    "{name} in the module of {k:?}"
                );
            }
        } else {
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
    let sg = Kernel::LinearSubgroup.source();
    assert!(sg.contains(&format!("const SG_LANES: u32 = {SUBGROUP_LANES}u;")));
    assert!(sg.contains(&format!("const SG_ROWS: u32 = {LINEAR_SUBGROUP_ROWS}u;")));
    assert!(sg.contains(&format!("const SG_COLS: u32 = {LINEAR_SUBGROUP_COLS}u;")));
    let gw = Kernel::LinearGradWeight.source();
    assert!(gw.contains(&format!("const LWG: u32 = {GRAD_WEIGHT_WORKGROUP_SIZE}u;")));
    let gws = Kernel::LinearGradWeightSubgroup.source();
    let [bn, bk] = GRAD_WEIGHT_SUBGROUP_BLOCK;
    assert!(gws.contains(&format!("const GSG_ROWS: u32 = {}u;", bn / SUBGROUP_LANES)));
    assert!(gws.contains(&format!("const GSG_COLS: u32 = {bk}u;")));
    let attn = Kernel::Attention.source();
    assert!(attn.contains(&format!("const MAX_T: u32 = {MAX_ATTENTION_LEN}u;")));
    assert!(attn.contains(&format!("const MAX_DH: u32 = {MAX_HEAD_DIM}u;")));
    for k in [Kernel::Attention, Kernel::AttentionBackward] {
        let src = k.source();
        assert!(src.contains(&format!("const AWG: u32 = {ATTENTION_WORKGROUP_SIZE}u;")));
    }
    // The subgroup kernels need whole subgroups in a workgroup.
    for size in [
        ATTENTION_WORKGROUP_SIZE,
        LINEAR_WORKGROUP_SIZE,
        GRAD_WEIGHT_WORKGROUP_SIZE,
    ] {
        assert!(size.is_multiple_of(SUBGROUP_LANES));
    }
}
