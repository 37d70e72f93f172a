// attention_backward: gradients of q, k and v for one (sequence, head) per
// workgroup, from the saved probabilities P, the output O and its gradient
// dO: dV = P^T dO, dS = P * (dO v^T - rowsum(dO * O)), dQ = scale * dS k,
// dK = scale * dS^T q. Masked pairs have P = 0 and so get no gradient.
// Uses the forward's layout for every tensor; the gradients go to the same
// row layout at their own offsets.

struct Params {
    q_off: u32,
    q_rs: u32,
    k_off: u32,
    k_rs: u32,
    v_off: u32,
    v_rs: u32,
    o_off: u32,  // forward output, [b, tq, o_rs]
    o_rs: u32,
    p_off: u32,  // saved probabilities [b, heads, tq, tk]
    tq: u32,
    tk: u32,
    dh: u32,
    heads: u32,
    mode: u32,
    scale: f32,
    slot_off: u32, // ints: [b, media] image slots (media mode)
    media: u32,
    latents: u32,
    do_off: u32,  // [b, tq, o_rs] gradient of the output
    dq_off: u32,  // gradients, laid out as q, k, v
    dk_off: u32,
    dv_off: u32,
    _pad0: u32,
    _pad1: u32,
}

const MODE_MEDIA: u32 = 2u;

@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> sh_q: array<f32, 512>;  // [MAX_T, MAX_DH]
var<workgroup> sh_k: array<f32, 512>;
var<workgroup> sh_v: array<f32, 512>;
var<workgroup> sh_do: array<f32, 512>;
var<workgroup> sh_p: array<f32, 1024>; // [MAX_T, MAX_T], P then dS
var<workgroup> sh_rd: array<f32, 32>;  // rowsum(dO * O)

// Row index (times its stride, without the tensor offset) of key j of
// sequence b, or NONE for an empty media slot.
fn key_row(rs: u32, b: u32, j: u32) -> u32 {
    if p.mode == MODE_MEDIA {
        let slot = ints[p.slot_off + b * p.media + j / p.latents];
        if slot == NONE {
            return NONE;
        }
        return (slot * p.latents + j % p.latents) * rs;
    }
    return (b * p.tk + j) * rs;
}

@compute @workgroup_size(WG)
fn attention_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = wg.x;
    let h = wg.y;
    let hc = h * p.dh;
    let p_base = p.p_off + (b * p.heads + h) * p.tq * p.tk;
    for (var i = lid; i < p.tq * p.dh; i += WG) {
        let t = i / p.dh;
        sh_q[i] = mem[p.q_off + (b * p.tq + t) * p.q_rs + hc + i % p.dh];
        sh_do[i] = mem[p.do_off + (b * p.tq + t) * p.o_rs + hc + i % p.dh];
    }
    for (var i = lid; i < p.tk * p.dh; i += WG) {
        let kr = key_row(p.k_rs, b, i / p.dh);
        let vr = key_row(p.v_rs, b, i / p.dh);
        var kv = 0.0;
        var vv = 0.0;
        if kr != NONE {
            kv = mem[p.k_off + kr + hc + i % p.dh];
            vv = mem[p.v_off + vr + hc + i % p.dh];
        }
        sh_k[i] = kv;
        sh_v[i] = vv;
    }
    for (var i = lid; i < p.tq * p.tk; i += WG) {
        sh_p[i] = mem[p_base + i];
    }
    if lid < p.tq {
        // sum_j P[t, j] dP[t, j] equals dO[t] . O[t].
        var acc = 0.0;
        // From memory: sh_do is still being filled by other invocations.
        let row = (b * p.tq + lid) * p.o_rs + hc;
        for (var d = 0u; d < p.dh; d++) {
            acc += mem[p.do_off + row + d] * mem[p.o_off + row + d];
        }
        sh_rd[lid] = acc;
    }
    workgroupBarrier();

    for (var i = lid; i < p.tk * p.dh; i += WG) {
        let j = i / p.dh;
        let d = i % p.dh;
        let vr = key_row(p.v_rs, b, j);
        if vr == NONE {
            continue;
        }
        var acc = 0.0;
        for (var t = 0u; t < p.tq; t++) {
            acc += sh_p[t * p.tk + j] * sh_do[t * p.dh + d];
        }
        mem[p.dv_off + vr + hc + d] = acc;
    }
    workgroupBarrier();

    for (var i = lid; i < p.tq * p.tk; i += WG) {
        let t = i / p.tk;
        let j = i % p.tk;
        var dp = 0.0;
        for (var d = 0u; d < p.dh; d++) {
            dp += sh_do[t * p.dh + d] * sh_v[j * p.dh + d];
        }
        sh_p[i] = sh_p[i] * (dp - sh_rd[t]);
    }
    workgroupBarrier();

    for (var i = lid; i < p.tq * p.dh; i += WG) {
        let t = i / p.dh;
        let d = i % p.dh;
        var acc = 0.0;
        for (var j = 0u; j < p.tk; j++) {
            acc += sh_p[t * p.tk + j] * sh_k[j * p.dh + d];
        }
        mem[p.dq_off + (b * p.tq + t) * p.q_rs + hc + d] = acc * p.scale;
    }
    for (var i = lid; i < p.tk * p.dh; i += WG) {
        let j = i / p.dh;
        let d = i % p.dh;
        let kr = key_row(p.k_rs, b, j);
        if kr == NONE {
            continue;
        }
        var acc = 0.0;
        for (var t = 0u; t < p.tq; t++) {
            acc += sh_p[t * p.tk + j] * sh_q[t * p.dh + d];
        }
        mem[p.dk_off + kr + hc + d] = acc * p.scale;
    }
}
