//! Every WGSL kernel, in every variant the library builds, is parsed and
//! validated by naga and translated to SPIR-V, MSL, HLSL and GLSL. A shader
//! that one backend would reject fails here, on any machine, without a GPU.

mod naga_check;

use naga_check::check_module;
use wgpu_gradclip::shaders::{compose, GradAccess, Kernel, MAX_GRAD_SLOTS, WORKGROUP_SIZES};

/// NORM_KIND values: max norm, p = 1, p = 2, general p.
const NORM_KINDS: [u32; 4] = [0, 1, 2, 3];

#[test]
fn clipping_kernels_validate_and_translate_everywhere() {
    for kernel in Kernel::ALL {
        for access in [GradAccess::Vec4, GradAccess::Scalar] {
            // 1 and 2 slots: devices with few storage buffers; 6: WebGPU's
            // default of 8 minus the two tables; 8: the cap.
            for (slots, wg) in [
                (1, 256),
                (2, 64),
                (6, 256),
                (MAX_GRAD_SLOTS, 32),
                (MAX_GRAD_SLOTS, 128),
            ] {
                assert!(WORKGROUP_SIZES.contains(&wg));
                let source = compose(kernel, access, slots, wg);
                let name = format!("{kernel:?}/{access:?}/{slots} slots/{wg} invocations");
                for kind in NORM_KINDS {
                    // LANES: the GPU walk (one team) and the CPU walk.
                    for lanes in [wg, 8] {
                        check_module(
                            &name,
                            &source,
                            kernel.entry_points(),
                            &[("NORM_KIND", f64::from(kind)), ("LANES", f64::from(lanes))],
                        );
                    }
                }
            }
        }
    }
}
