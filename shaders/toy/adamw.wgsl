// adamw: one AdamW step over a run of parameters, as torch.optim.AdamW:
// p *= 1 - lr * wd (only from `decay_from` on), m and v updated with the
// gradient, p -= lr * mhat / (sqrt(vhat) + eps). lr and the bias
// corrections change every step, so they come from the per-step ints.

struct Params {
    n: u32,          // a multiple of 4
    p_off: u32,      // [n] parameters; every offset is a multiple of 4
    g_off: u32,      // [n] gradients
    m_off: u32,      // [n] first moments
    v_off: u32,      // [n] second moments
    decay_from: u32, // elements before this index (a multiple of 4) get no weight decay
    step_off: u32,   // ints: lr, 1 - beta1^t, 1 - beta2^t as f32 bits
    _pad0: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

@group(1) @binding(0) var<uniform> p: Params;

// Each invocation updates four consecutive parameters as one vec4: every
// offset, `decay_from` and the padded length are multiples of 4 (tensors
// start on vec4 boundaries, and the padding between them has zero
// gradient, so it stays zero).
@compute @workgroup_size(WG)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i4 = gid.x + gid.y * nwg.x * WG;
    let i = 4u * i4;
    if i >= p.n {
        return;
    }
    let lr = bitcast<f32>(ints[p.step_off]);
    let bc1 = bitcast<f32>(ints[p.step_off + 1u]);
    let bc2 = bitcast<f32>(ints[p.step_off + 2u]);
    let g = ld4(p.g_off / 4u + i4);
    var w = ld4(p.p_off / 4u + i4);
    // decay_from is a multiple of 4, so the four lanes agree.
    let decay = select(1.0, 1.0 - lr * p.weight_decay, i >= p.decay_from);
    w *= decay;
    let m = p.beta1 * ld4(p.m_off / 4u + i4) + (1.0 - p.beta1) * g;
    let v = p.beta2 * ld4(p.v_off / 4u + i4) + (1.0 - p.beta2) * g * g;
    st4(p.m_off / 4u + i4, m);
    st4(p.v_off / 4u + i4, v);
    st4(p.p_off / 4u + i4, w - lr * (m / bc1) / (sqrt(v / bc2) + p.eps));
}
