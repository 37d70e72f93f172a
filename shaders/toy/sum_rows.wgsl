// sum_rows: y[i, c] = sum_g x[g, i, c] (+ y[i, c] when accumulating): the
// gradient of a table broadcast over a batch, such as the Perceiver's
// latents (one copy per image) or learned positions (one per sequence).

struct Params {
    x_off: u32,    // [groups, rows, n]
    groups: u32,
    rows: u32,
    n: u32,
    y_off: u32,    // [rows, n]
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn sum_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= p.rows * p.n {
        return;
    }
    var acc = 0.0;
    for (var g = 0u; g < p.groups; g++) {
        acc += ld(p.x_off + g * p.rows * p.n + i);
    }
    if p.accumulate != 0u {
        acc += ld(p.y_off + i);
    }
    st(p.y_off + i, acc);
}
