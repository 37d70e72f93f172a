// Shared by every clipping kernel: the uniform block, the plan and scratch
// bindings, and the overflow-safe power-sum arithmetic.
//
// A power sum is the pair (e, s) standing for
//     sum_i |x_i|^p  =  2^(p * (e - 127)) * s * 2^P_SHIFT
// where e is the largest biased exponent field seen (0 when nothing was
// seen) and every element was scaled by 2^(127 - e) with integer exponent
// arithmetic before being raised to p. Scaling by a power of two is exact,
// and working on bit patterns means the result does not depend on whether
// the device flushes subnormal floats to zero. For the max norm (NORM_KIND
// 0) e instead holds the bit pattern of the largest |x|, which orders like
// the value itself.

const WG_SIZE: u32 = 256u;
// Invocations that walk memory side by side; a power of two dividing
// WG_SIZE. See `team_walk`.
override LANES: u32 = 256u;

const FLAG_NAN: u32 = 1u;
const FLAG_INF: u32 = 2u;
const FLAG_SKIPPED: u32 = 4u;
const NONFINITE: u32 = 3u;

const ABS_MASK: u32 = 0x7fffffffu;
const MANTISSA_MASK: u32 = 0x7fffffu;
// Written in hex: the decimal 3.40282347e38 rounds above f32::MAX, which
// strict compilers (Tint) reject.
const F32_MAX: f32 = 0x1.fffffep+127f;

// 0: p = inf, 1: p = 1, 2: p = 2, 3: any other finite p (uses params.p).
override NORM_KIND: u32 = 2u;

struct Params {
    chunk_base: u32,
    n_chunks: u32,
    grid_x: u32,
    n_groups: u32,
    results_base: u32,
    coef_base: u32,
    group_table_base: u32,
    global_mode: u32,
    error_policy: u32,
    p: f32,
    p_shift: f32,
    max_norm: f32,
    eps: f32,
    clip_value: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Chunks as (group, table index of the first segment, segment count,
// partial index); segments as (slot, first element, element count, 0); then
// one (first partial, partial count) entry per group.
@group(0) @binding(1) var<storage, read> plan_table: array<vec4<u32>>;
// Partials, then group power sums plus the total, then per-group
// (norm, coefficient, flags, clipped) plus the total.
@group(0) @binding(2) var<storage, read_write> scratch: array<vec4<u32>>;

struct PowerSum {
    e: i32,
    s: f32,
    flags: u32,
}

fn pack_sum(v: PowerSum) -> vec4<u32> {
    return vec4<u32>(bitcast<u32>(v.e), bitcast<u32>(v.s), v.flags, 0u);
}

fn unpack_sum(v: vec4<u32>) -> PowerSum {
    return PowerSum(bitcast<i32>(v.x), bitcast<f32>(v.y), v.z);
}

// Exactly 2^k, built from its bit pattern; 0 below the normal range.
fn pow2(k: i32) -> f32 {
    if (k < -126) {
        return 0.0;
    }
    return bitcast<f32>(u32(min(k, 127) + 127) << 23u);
}

// 2^(p * d) for d <= 0: moves a sum onto a larger exponent.
fn rescale(d: i32) -> f32 {
    switch NORM_KIND {
        case 1u: {
            return pow2(d);
        }
        case 2u: {
            return pow2(2 * d);
        }
        default: {
            return exp2(params.p * f32(d));
        }
    }
}

fn powp(y: vec4<f32>) -> vec4<f32> {
    switch NORM_KIND {
        case 1u: {
            return y;
        }
        case 2u: {
            return y * y;
        }
        default: {
            // P_SHIFT keeps y^p of a huge p inside f32 range; see the header.
            let r = exp2(params.p * log2(y) - params.p_shift);
            return select(vec4<f32>(0.0), r, y > vec4<f32>(0.0));
        }
    }
}

fn root(s: f32) -> f32 {
    switch NORM_KIND {
        case 1u: {
            return s;
        }
        case 2u: {
            return sqrt(s);
        }
        default: {
            return exp2((log2(s) + params.p_shift) / params.p);
        }
    }
}

fn combine(a: PowerSum, b: PowerSum) -> PowerSum {
    let flags = a.flags | b.flags;
    let e = max(a.e, b.e);
    if (NORM_KIND == 0u) {
        return PowerSum(e, 0.0, flags);
    }
    return PowerSum(e, a.s * rescale(a.e - e) + b.s * rescale(b.e - e), flags);
}

// Per-invocation accumulator: one shared exponent, four lane sums so that
// each lane adds a quarter of the elements (shorter sequential chains).
struct Acc {
    e: i32,
    s: vec4<f32>,
    flags: u32,
}

fn new_acc() -> Acc {
    return Acc(0, vec4<f32>(0.0), 0u);
}

// Adds four |x| bit patterns (sign already cleared, masked lanes zero).
fn accumulate(acc: ptr<function, Acc>, raw: vec4<u32>) {
    var bits = raw;
    var ex = bits >> vec4<u32>(23u);
    let nonfinite = ex == vec4<u32>(255u);
    if (any(nonfinite)) {
        let nan = nonfinite & ((bits & vec4<u32>(MANTISSA_MASK)) != vec4<u32>(0u));
        let inf = nonfinite & !nan;
        (*acc).flags |= select(0u, FLAG_NAN, any(nan)) | select(0u, FLAG_INF, any(inf));
        bits = select(bits, vec4<u32>(0u), nonfinite);
        ex = select(ex, vec4<u32>(0u), nonfinite);
    }
    if (NORM_KIND == 0u) {
        let m = max(max(bits.x, bits.y), max(bits.z, bits.w));
        (*acc).e = max((*acc).e, i32(m));
        return;
    }

    // Subnormals are scaled as if their exponent field were 1.
    let top4 = max(ex, select(vec4<u32>(0u), vec4<u32>(1u), bits != vec4<u32>(0u)));
    let top = i32(max(max(top4.x, top4.y), max(top4.z, top4.w)));
    if (top > (*acc).e) {
        (*acc).s *= rescale((*acc).e - top);
        (*acc).e = top;
    }
    let e = (*acc).e;

    // Normal x: subtract (e - 127) from the exponent field, which is exact
    // while the result stays normal, that is for exponent fields of at
    // least e - 126. Zeros give 0.
    var y = bitcast<vec4<f32>>(vec4<i32>(bits) - vec4<i32>((e - 127) << 23u));
    y = select(y, vec4<f32>(0.0), bits == vec4<u32>(0u));
    let low = (vec4<i32>(ex) < vec4<i32>(max(e - 126, 1))) & (bits != vec4<u32>(0u));
    if (any(low)) {
        // Rare: subnormals, and values more than 2^126 below the running
        // maximum (their p-th power cannot reach the sum's precision, so
        // they are dropped). Subnormal x = mantissa * 2^-149, so
        // x / 2^(e - 127) = mantissa * 2^(-22 - e).
        let sub = select(vec4<f32>(0.0), vec4<f32>(bits) * pow2(-22 - e), ex == vec4<u32>(0u));
        y = select(y, sub, low);
    }
    (*acc).s += powp(y);
}

fn acc_sum(acc: Acc) -> PowerSum {
    return PowerSum(acc.e, (acc.s.x + acc.s.y) + (acc.s.z + acc.s.w), acc.flags);
}

var<workgroup> sh_e: array<i32, WG_SIZE>;
var<workgroup> sh_s: array<f32, WG_SIZE>;
var<workgroup> sh_flags: array<u32, WG_SIZE>;

// Tree reduction in a fixed order, so results are bit-identical run to run.
// Every invocation receives the workgroup's total.
fn workgroup_combine(lix: u32, v: PowerSum) -> PowerSum {
    workgroupBarrier();
    sh_e[lix] = v.e;
    sh_s[lix] = v.s;
    sh_flags[lix] = v.flags;
    for (var stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if (lix < stride) {
            let a = PowerSum(sh_e[lix], sh_s[lix], sh_flags[lix]);
            let b = PowerSum(sh_e[lix + stride], sh_s[lix + stride], sh_flags[lix + stride]);
            let r = combine(a, b);
            sh_e[lix] = r.e;
            sh_s[lix] = r.s;
            sh_flags[lix] = r.flags;
        }
    }
    workgroupBarrier();
    return PowerSum(sh_e[0], sh_s[0], sh_flags[0]);
}

// Index of this workgroup's chunk; dispatches wider than one grid dimension
// fold the chunk index over x and y.
fn chunk_index(wg: vec3<u32>) -> u32 {
    return wg.y * params.grid_x + wg.x;
}

const NO_EDGE: u32 = 0xffffffffu;

// A chunk [first, end) covers whole vec4s from ceil(first / 4) to
// floor(end / 4), which need no masking, plus at most two vec4s it covers
// only in part. Invocation 0 takes the partial head, invocation 1 the
// partial tail (unless it is the head's vec4 too); NO_EDGE means none.
fn edge_vec4(first: u32, end: u32, lix: u32) -> u32 {
    let head = first / 4u;
    let tail = end / 4u;
    if (lix == 0u && first % 4u != 0u) {
        return head;
    }
    if (lix == 1u && end % 4u != 0u && (first % 4u == 0u || tail != head)) {
        return tail;
    }
    return NO_EDGE;
}

// Lanes of vec4 number i4 that lie in [first, end).
fn lanes_inside(i4: u32, first: u32, end: u32) -> vec4<bool> {
    let ix = vec4<u32>(i4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    return (ix >= vec4<u32>(first)) & (ix < vec4<u32>(end));
}

// The whole vec4s of a chunk [first, end), split among the workgroup's
// WG_SIZE / LANES teams of LANES invocations. Team t walks its own
// contiguous share from `start`, stepping by LANES, up to `end`. With LANES
// == WG_SIZE (GPUs) the whole workgroup strides the chunk together, so
// neighbouring invocations read neighbouring vec4s. CPU drivers run a
// workgroup one SIMD batch of invocations at a time, each batch through the
// whole loop; with a team per batch, each batch reads memory front to back
// instead of jumping WG_SIZE vec4s at every step, which is several times
// faster there.
struct TeamWalk {
    start: u32,
    end: u32,
}

fn team_walk(first: u32, end: u32, lix: u32) -> TeamWalk {
    let a = (first + 3u) / 4u;
    let b = max(end / 4u, a);
    let teams = WG_SIZE / LANES;
    let share = ((b - a + teams - 1u) / teams + LANES - 1u) / LANES * LANES;
    let lo = min(a + (lix / LANES) * share, b);
    return TeamWalk(lo + lix % LANES, min(lo + share, b));
}
