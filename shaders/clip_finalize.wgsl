// Finalize: one workgroup turns partials into per-group power sums
// (reduce_groups), then power sums into norms and clip coefficients
// (compute_coefficients); finalize does both in one dispatch. Coefficients
// follow PyTorch: c = min(1, max_norm / (norm + eps)), NaN when the norm is
// NaN, 0 when it is infinite. Under the error policy a non-finite norm
// sets every coefficient to 1, so the scale pass leaves everything alone.

fn reduce_range(base: u32, count: u32, lix: u32) -> PowerSum {
    var acc = PowerSum(0, 0.0, 0u);
    for (var i = lix; i < count; i += WG_SIZE) {
        acc = combine(acc, unpack_sum(scratch[base + i]));
    }
    return workgroup_combine(lix, acc);
}

// NaN and infinity are built at run time: WGSL makes a constant expression
// that evaluates to either a shader-creation error, and Tint enforces it.
fn nan_f32() -> f32 {
    let bits = 0x7fc00000u;
    return bitcast<f32>(bits);
}

fn inf_f32() -> f32 {
    let bits = 0x7f800000u;
    return bitcast<f32>(bits);
}

fn norm_of(v: PowerSum) -> f32 {
    if ((v.flags & FLAG_NAN) != 0u) {
        return nan_f32();
    }
    if ((v.flags & FLAG_INF) != 0u) {
        return inf_f32();
    }
    if (NORM_KIND == 0u) {
        return bitcast<f32>(u32(v.e));
    }
    if (v.s == 0.0) {
        return 0.0;
    }
    // May overflow to inf when the true norm exceeds f32::MAX.
    return root(v.s) * pow2(v.e - 127);
}

fn coefficient(v: PowerSum) -> f32 {
    if ((v.flags & FLAG_NAN) != 0u) {
        return nan_f32();
    }
    if ((v.flags & FLAG_INF) != 0u) {
        return 0.0;
    }
    let norm = norm_of(v);
    if (norm <= F32_MAX) {
        return min(1.0, params.max_norm / (norm + params.eps));
    }
    // Every element is finite but the norm itself overflowed: divide in the
    // scaled domain instead, in two power-of-two steps that stay in range.
    let d = v.e - 127;
    let h = d / 2;
    return min(1.0, (params.max_norm / root(v.s)) * pow2(-h) * pow2(h - d));
}

fn reduce_groups_body(lix: u32) {
    for (var g = 0u; g < params.n_groups; g++) {
        let range = plan_table[params.group_table_base + g];
        let sum = reduce_range(range.x, range.y, lix);
        if (lix == 0u) {
            scratch[params.results_base + g] = pack_sum(sum);
        }
    }
}

fn compute_coefficients_body(lix: u32) {
    // The total is recomputed from the group sums, which a caller may have
    // replaced (for example with sums combined across ranks).
    let total = reduce_range(params.results_base, params.n_groups, lix);
    if (lix == 0u) {
        scratch[params.results_base + params.n_groups] = pack_sum(total);
    }
    let skip = params.error_policy != 0u && (total.flags & NONFINITE) != 0u;
    let total_c = coefficient(total);
    for (var g = lix; g <= params.n_groups; g += WG_SIZE) {
        var own = total;
        if (g < params.n_groups) {
            own = unpack_sum(scratch[params.results_base + g]);
        }
        var c = select(coefficient(own), total_c, params.global_mode != 0u);
        var flags = own.flags;
        if (skip) {
            c = 1.0;
            flags |= FLAG_SKIPPED;
        }
        let clipped = select(0u, 1u, c != 1.0);
        scratch[params.coef_base + g] = vec4<u32>(bitcast<u32>(norm_of(own)), bitcast<u32>(c), flags, clipped);
    }
}

@compute @workgroup_size(WG_SIZE)
fn reduce_groups(@builtin(local_invocation_index) lix: u32) {
    reduce_groups_body(lix);
}

@compute @workgroup_size(WG_SIZE)
fn compute_coefficients(@builtin(local_invocation_index) lix: u32) {
    compute_coefficients_body(lix);
}

@compute @workgroup_size(WG_SIZE)
fn finalize(@builtin(local_invocation_index) lix: u32) {
    reduce_groups_body(lix);
    // Group sums written by invocation 0 must be visible to all.
    storageBarrier();
    compute_coefficients_body(lix);
}
