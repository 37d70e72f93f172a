// attention: softmax(q k^T * scale + mask) v, one invocation per (sequence,
// head, query) with an online softmax in registers (no workgroup memory or
// barriers: loads and barriers, not arithmetic, bound CPU drivers), saving
// the probabilities for the backward pass. Three masks:
// none (Perceiver latents over media and latents), causal with key padding
// (language model), and OpenFlamingo's immediate-media mask (text token t
// sees only the latents of image number text_time[t]; with text_time 0 it
// sees nothing and its output is 0).

struct Params {
    q_off: u32,   // [b, tq, q_rs], head h at columns h * dh
    q_rs: u32,
    k_off: u32,   // [b, tk, k_rs] or, for media, [slots, latents, k_rs]
    k_rs: u32,
    v_off: u32,   // laid out as k
    v_rs: u32,
    o_off: u32,   // [b, tq, o_rs]
    o_rs: u32,
    p_off: u32,   // [b, heads, tq, tk] probabilities
    tq: u32,
    tk: u32,
    dh: u32,
    heads: u32,
    mode: u32,    // = MODE
    scale: f32,
    len_off: u32,  // ints: [b] sequence lengths (causal mode)
    time_off: u32, // ints: [b, tq] text_time (media mode)
    slot_off: u32, // ints: [b, media] image slot per image, NONE if absent (media mode)
    media: u32,    // images per sequence (media mode)
    latents: u32,  // latents per image (media mode)
}

const MODE_NONE: u32 = 0u;
const MODE_CAUSAL: u32 = 1u;
const MODE_MEDIA: u32 = 2u;
// Limits the host checks: sequence length and head width (4 vec4 columns).
const MAX_T: u32 = 32u;
const MAX_DH: u32 = 16u;
const AWG: u32 = 64u;

// = mode, fixed when the pipeline is built: CPU drivers run both sides of
// a branch on a uniform-buffer value, so every mask used to cost as much
// as all three.
override MODE: u32 = 0u;

@group(1) @binding(0) var<uniform> p: Params;

// Element offset of key/value row j of sequence b (NONE when the media
// slot is empty).
fn key_row(off: u32, rs: u32, b: u32, j: u32) -> u32 {
    if MODE == MODE_MEDIA {
        let slot = ints[p.slot_off + b * p.media + j / p.latents];
        if slot == NONE {
            return NONE;
        }
        return off + (slot * p.latents + j % p.latents) * rs;
    }
    return off + (b * p.tk + j) * rs;
}

fn allowed(b: u32, t: u32, j: u32) -> bool {
    switch MODE {
        case MODE_CAUSAL: {
            return j <= t && j < ints[p.len_off + b];
        }
        case MODE_MEDIA: {
            return ints[p.time_off + b * p.tq + t] == j / p.latents + 1u
                && ints[p.slot_off + b * p.media + j / p.latents] != NONE;
        }
        default: {
            return true;
        }
    }
}

// What an invocation of the forward kernels knows of its query: sequence
// b, query t, head column hc, its q row, where its probabilities and
// output go, and whether it sees anything at all.
struct QueryLane {
    b: u32,
    t: u32,
    hc: u32,
    q: mat4x4<f32>,
    p_base: u32,
    o_ix: u32,
    live: bool,
}

// x: head and query of sequence y; gid.x < heads * tq.
fn query_lane(gid: vec3<u32>) -> QueryLane {
    let b = gid.y;
    let h = gid.x / p.tq;
    let t = gid.x % p.tq;
    let hc = h * p.dh;
    // A text token before any image sees nothing: OpenFlamingo zeroes it.
    var live = true;
    if MODE == MODE_MEDIA {
        live = ints[p.time_off + b * p.tq + t] != 0u;
    }
    return QueryLane(
        b,
        t,
        hc,
        head_row(p.q_off + (b * p.tq + t) * p.q_rs + hc),
        p.p_off + ((b * p.heads + h) * p.tq + t) * p.tk,
        p.o_off + (b * p.tq + t) * p.o_rs + hc,
        live,
    );
}

@compute @workgroup_size(AWG)
fn attention(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x >= p.heads * p.tq {
        return;
    }
    let ql = query_lane(gid);
    let b = ql.b;
    let t = ql.t;
    let hc = ql.hc;
    var acc = online_new();
    if ql.live {
        for (var j = 0u; j < p.tk; j++) {
            if !allowed(b, t, j) {
                continue;
            }
            let s = dot16(ql.q, head_row(key_row(p.k_off, p.k_rs, b, j) + hc)) * p.scale;
            online_add(&acc, s, head_row(key_row(p.v_off, p.v_rs, b, j) + hc));
        }
    }
    let inv = online_inv(acc);
    for (var j = 0u; j < p.tk; j++) {
        var pr = 0.0;
        if ql.live && allowed(b, t, j) {
            let s = dot16(ql.q, head_row(key_row(p.k_off, p.k_rs, b, j) + hc)) * p.scale;
            pr = exp(s - acc.mx) * inv;
        }
        st(ql.p_base + j, pr);
    }
    store_row(ql.o_ix, acc.o * inv);
}
