// attention_backward: gradients of q, k and v from the saved probabilities
// P, the output O and its gradient dO: dS = P * (dO v^T - rowsum(dO * O)),
// dQ = scale * dS k, dK = scale * dS^T q, dV = P^T dO. For each (sequence,
// head), one invocation per query writes its dQ row and one per key its dK
// and dV rows, each summing in a fixed order in registers (no workgroup
// memory or barriers). Masked pairs have P = 0 and so get no gradient.
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
    mode: u32,    // = MODE
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
const AWG: u32 = 64u;

// = mode, fixed when the pipeline is built: CPU drivers run both sides of
// a branch on a uniform-buffer value, so every mask used to cost as much
// as all three.
override MODE: u32 = 0u;

@group(1) @binding(0) var<uniform> p: Params;

// Row offset (times its stride, without the tensor offset) of key j of
// sequence b, or NONE for an empty media slot.
fn key_row(rs: u32, b: u32, j: u32) -> u32 {
    if MODE == MODE_MEDIA {
        let slot = ints[p.slot_off + b * p.media + j / p.latents];
        if slot == NONE {
            return NONE;
        }
        return (slot * p.latents + j % p.latents) * rs;
    }
    return (b * p.tk + j) * rs;
}

// What an invocation of the backward kernels knows of its role: sequence
// b, role r (queries 0..tq, then keys), head column hc, and where the
// head's probabilities start. gid.x < heads * (tq + tk).
struct RoleLane {
    b: u32,
    r: u32,
    hc: u32,
    p_base: u32,
}

// x: head and role of sequence y.
fn role_lane(gid: vec3<u32>) -> RoleLane {
    let roles = p.tq + p.tk;
    let h = gid.x / roles;
    return RoleLane(gid.y, gid.x % roles, h * p.dh, p.p_off + (gid.y * p.heads + h) * p.tq * p.tk);
}

// Output row `row` (b * tq + t) at head column hc: its gradient dO and
// rowsum(dO * O), which equals sum_j P[t, j] dP[t, j].
struct OutGrad {
    d_o: mat4x4<f32>,
    rd: f32,
}

fn out_grad(row: u32, hc: u32) -> OutGrad {
    let d_o = head_row(p.do_off + row * p.o_rs + hc);
    return OutGrad(d_o, dot16(d_o, head_row(p.o_off + row * p.o_rs + hc)));
}

@compute @workgroup_size(AWG)
fn attention_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x >= p.heads * (p.tq + p.tk) {
        return;
    }
    let rl = role_lane(gid);
    let b = rl.b;
    let r = rl.r;
    let hc = rl.hc;
    let p_base = rl.p_base;
    if r < p.tq {
        let t = r;
        let row = (b * p.tq + t);
        let g = out_grad(row, hc);
        var dq = mat4x4<f32>();
        for (var j = 0u; j < p.tk; j++) {
            let pr = ld(p_base + t * p.tk + j);
            if pr == 0.0 {
                continue;
            }
            let v = head_row(p.v_off + key_row(p.v_rs, b, j) + hc);
            let ds = pr * (dot16(g.d_o, v) - g.rd);
            dq += head_row(p.k_off + key_row(p.k_rs, b, j) + hc) * ds;
        }
        store_row(p.dq_off + row * p.q_rs + hc, dq * p.scale);
        return;
    }
    let j = r - p.tq;
    let kr = key_row(p.k_rs, b, j);
    if kr == NONE {
        return;
    }
    let vr = key_row(p.v_rs, b, j);
    let v = head_row(p.v_off + vr + hc);
    var dk = mat4x4<f32>();
    var dv = mat4x4<f32>();
    for (var t = 0u; t < p.tq; t++) {
        let pr = ld(p_base + t * p.tk + j);
        if pr == 0.0 {
            continue;
        }
        let row = (b * p.tq + t);
        let g = out_grad(row, hc);
        dv += g.d_o * pr;
        dk += head_row(p.q_off + row * p.q_rs + hc) * (pr * (dot16(g.d_o, v) - g.rd));
    }
    store_row(p.dk_off + kr + hc, dk * p.scale);
    store_row(p.dv_off + vr + hc, dv);
}
