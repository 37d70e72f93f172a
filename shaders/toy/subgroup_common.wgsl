// Prelude of the *_subgroup kernels, which only devices with subgroup
// operations can build: the subgroup width they are written for, and a
// head row taken from another lane.

// Lanes of a subgroup; the kernels run only where the driver's subgroups
// are exactly this wide and made of consecutive invocations.
const SG_LANES: u32 = 8u;

// The 4 x 4 matrix `m` of lane `src_lane`.
fn shuffle_row(m: mat4x4<f32>, src_lane: u32) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupShuffle(m[0], src_lane), subgroupShuffle(m[1], src_lane),
        subgroupShuffle(m[2], src_lane), subgroupShuffle(m[3], src_lane));
}
