// gather_rows: y[s, i] = x[index[s], i] for blocks of `block` floats: the
// cached vision features of each image slot of a batch.

struct Params {
    x_off: u32,   // [table, block]
    y_off: u32,   // [slots, block]
    idx_off: u32, // ints: [slots] row of x for each slot
    slots: u32,
    block: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let b4 = p.block / 4u;
    if i >= p.slots * b4 {
        return;
    }
    let s = i / b4;
    st4(p.y_off / 4u + i, ld4((p.x_off + ints[p.idx_off + s] * p.block) / 4u + i % b4));
}
