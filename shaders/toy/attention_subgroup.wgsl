// attention_subgroup: the forward attention of attention.wgsl (whose
// uniform block, overrides and helpers it shares) for CPU drivers that run
// 8 invocations as one SIMD batch and expose it as a subgroup. The lanes
// of a subgroup are 8 queries of one (sequence, head), which read the same
// key and value rows; there every read costs a scalar load per lane
// whatever its address, while taking a value from another lane is a
// register shuffle. So for each 8 keys, each lane loads one key's k and v
// rows and takes the other seven from its neighbours with
// subgroupShuffle: 8 row loads per 8 keys instead of 64. Needs tq to be
// a multiple of 8 and subgroups of 8 consecutive invocations; the host
// picks this kernel only then.


// Row `row` (a key_row result) of the tensor at head column hc, or zeros
// for NONE, read from a safe address so every lane can load
// unconditionally.
fn head_row_or_zero(row: u32, hc: u32) -> mat4x4<f32> {
    let ok = row != NONE;
    let m = head_row(select(0u, row + hc, ok));
    let z = vec4<f32>(0.0);
    return mat4x4<f32>(select(z, m[0], ok), select(z, m[1], ok), select(z, m[2], ok),
        select(z, m[3], ok));
}

// Key row j of sequence b in the tensor at `off`, or NONE past tk.
fn chunk_row(off: u32, rs: u32, b: u32, j: u32) -> u32 {
    if j >= p.tk {
        return NONE;
    }
    return key_row(off, rs, b, j);
}

@compute @workgroup_size(AWG)
fn attention_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // heads * tq is a multiple of 8: whole subgroups leave together.
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
    // Every lane runs every chunk, live or not, so the broadcasts see all
    // eight lanes.
    for (var j0 = 0u; j0 < p.tk; j0 += SG_LANES) {
        let kl = head_row_or_zero(chunk_row(p.k_off, p.k_rs, b, j0 + lane), hc);
        let vl = head_row_or_zero(chunk_row(p.v_off, p.v_rs, b, j0 + lane), hc);
        for (var jj = 0u; jj < SG_LANES; jj++) {
            let k = mat4x4<f32>(subgroupShuffle(kl[0], jj), subgroupShuffle(kl[1], jj),
                subgroupShuffle(kl[2], jj), subgroupShuffle(kl[3], jj));
            let v = mat4x4<f32>(subgroupShuffle(vl[0], jj), subgroupShuffle(vl[1], jj),
                subgroupShuffle(vl[2], jj), subgroupShuffle(vl[3], jj));
            let j = j0 + jj;
            if live && j < p.tk && allowed(b, t, j) {
                let s = dot16(q, k) * p.scale;
                let m_new = max(mx, s);
                let decay = exp(mx - m_new);
                let e = exp(s - m_new);
                sum = sum * decay + e;
                o = o * decay + v * e;
                mx = m_new;
            }
        }
    }
    var inv = 0.0;
    if sum > 0.0 {
        inv = 1.0 / sum;
    }
    for (var j0 = 0u; j0 < p.tk; j0 += SG_LANES) {
        let kl = head_row_or_zero(chunk_row(p.k_off, p.k_rs, b, j0 + lane), hc);
        for (var jj = 0u; jj < SG_LANES; jj++) {
            let k = mat4x4<f32>(subgroupShuffle(kl[0], jj), subgroupShuffle(kl[1], jj),
                subgroupShuffle(kl[2], jj), subgroupShuffle(kl[3], jj));
            let j = j0 + jj;
            if j < p.tk {
                var pr = 0.0;
                if live && allowed(b, t, j) {
                    pr = exp(dot16(q, k) * p.scale - mx) * inv;
                }
                st(p_base + j, pr);
            }
        }
    }
    o = o * inv;
    // dh and the offsets are multiples of 4: whole vec4s.
    for (var i = 0u; i < p.dh / 4u; i++) {
        st4(o_ix / 4u + i, o[i]);
    }
}
