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

// A head row of dh <= 16 floats as the columns of a 4 x 4 matrix, zero
// past dh. `off` is a multiple of 4.
fn head_row(off: u32) -> mat4x4<f32> {
    let dh4 = p.dh / 4u;
    let b = off / 4u;
    let z = vec4<f32>(0.0);
    return mat4x4<f32>(select(z, ld4(b), dh4 > 0u), select(z, ld4(b + 1u), dh4 > 1u),
        select(z, ld4(b + 2u), dh4 > 2u), select(z, ld4(b + 3u), dh4 > 3u));
}

fn dot16(a: mat4x4<f32>, b: mat4x4<f32>) -> f32 {
    return dot(a[0], b[0]) + dot(a[1], b[1]) + dot(a[2], b[2]) + dot(a[3], b[3]);
}

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

@compute @workgroup_size(AWG)
fn attention(@builtin(global_invocation_id) gid: vec3<u32>) {
    // x: head and query of sequence y.
    if gid.x >= p.heads * p.tq {
        return;
    }
    let b = gid.y;
    let h = gid.x / p.tq;
    let t = gid.x % p.tq;
    let hc = h * p.dh;
    let q = head_row(p.q_off + (b * p.tq + t) * p.q_rs + hc);
    let p_base = p.p_off + ((b * p.heads + h) * p.tq + t) * p.tk;
    let o_ix = p.o_off + (b * p.tq + t) * p.o_rs + hc;
    // A text token before any image sees nothing: OpenFlamingo zeroes it.
    var live = true;
    if MODE == MODE_MEDIA {
        live = ints[p.time_off + b * p.tq + t] != 0u;
    }
    var mx = F32_LOWEST;
    var sum = 0.0;
    var o = mat4x4<f32>();
    if live {
        for (var j = 0u; j < p.tk; j++) {
            if !allowed(b, t, j) {
                continue;
            }
            let s = dot16(q, head_row(key_row(p.k_off, p.k_rs, b, j) + hc)) * p.scale;
            let m_new = max(mx, s);
            let decay = exp(mx - m_new);
            let e = exp(s - m_new);
            sum = sum * decay + e;
            o = o * decay + head_row(key_row(p.v_off, p.v_rs, b, j) + hc) * e;
            mx = m_new;
        }
    }
    var inv = 0.0;
    if sum > 0.0 {
        inv = 1.0 / sum;
    }
    for (var j = 0u; j < p.tk; j++) {
        var pr = 0.0;
        if live && allowed(b, t, j) {
            let s = dot16(q, head_row(key_row(p.k_off, p.k_rs, b, j) + hc)) * p.scale;
            pr = exp(s - mx) * inv;
        }
        st(p_base + j, pr);
    }
    o = o * inv;
    // dh and the offsets are multiples of 4: whole vec4s.
    for (var i = 0u; i < p.dh / 4u; i++) {
        st4(o_ix / 4u + i, o[i]);
    }
}
