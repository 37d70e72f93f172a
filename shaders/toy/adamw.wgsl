// adamw: one AdamW step over a run of parameters, as torch.optim.AdamW:
// p *= 1 - lr * wd (only from `decay_from` on), m and v updated with the
// gradient, p -= lr * mhat / (sqrt(vhat) + eps). lr and the bias
// corrections change every step, so they come from the per-step ints.

struct Params {
    n: u32,
    p_off: u32,      // [n] parameters
    g_off: u32,      // [n] gradients
    m_off: u32,      // [n] first moments
    v_off: u32,      // [n] second moments
    decay_from: u32, // elements before this index get no weight decay
    step_off: u32,   // ints: lr, 1 - beta1^t, 1 - beta2^t as f32 bits
    _pad0: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.n {
        return;
    }
    let lr = bitcast<f32>(ints[p.step_off]);
    let bc1 = bitcast<f32>(ints[p.step_off + 1u]);
    let bc2 = bitcast<f32>(ints[p.step_off + 2u]);
    let g = ld(p.g_off + i);
    var w = ld(p.p_off + i);
    if i >= p.decay_from {
        w *= 1.0 - lr * p.weight_decay;
    }
    let m = p.beta1 * ld(p.m_off + i) + (1.0 - p.beta1) * g;
    let v = p.beta2 * ld(p.v_off + i) + (1.0 - p.beta2) * g * g;
    st(p.m_off + i, m);
    st(p.v_off + i, v);
    st(p.p_off + i, w - lr * (m / bc1) / (sqrt(v / bc2) + p.eps));
}
