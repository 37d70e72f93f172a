// Norm pass: each workgroup reduces one chunk (one or more segments of one
// group) to a power sum and writes it to scratch[partial index]. Segments
// never straddle a group or a binding window, so one dispatch covers every
// view in up to one binding per slot, however many views those bindings
// hold.

// @slot-begin
fn norm_range_SLOT(first: u32, end: u32, lix: u32, acc: ptr<function, Acc>) {
    let walk = team_walk(first, end, lix);
    for (var i4 = walk.start; i4 < walk.end; i4 += LANES) {
        accumulate(acc, bitcast<vec4<u32>>(load4_SLOT(i4)) & vec4<u32>(ABS_MASK));
    }
    let edge = edge_vec4(first, end, lix);
    if (edge != NO_EDGE) {
        let raw = bitcast<vec4<u32>>(load4_SLOT(edge)) & vec4<u32>(ABS_MASK);
        accumulate(acc, select(vec4<u32>(0u), raw, lanes_inside(edge, first, end)));
    }
}
// @slot-end

fn norm_range(slot: u32, first: u32, end: u32, lix: u32, acc: ptr<function, Acc>) {
    switch slot {
        // @slot-case case SLOTu: { norm_range_SLOT(first, end, lix, acc); }
        default: {}
    }
}

@compute @workgroup_size(WG_SIZE)
fn norm_partials(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lix: u32,
) {
    let chunk_ix = chunk_index(wg);
    if (chunk_ix >= params.n_chunks) {
        return;
    }
    let chunk = plan_table[params.chunk_base + chunk_ix];

    var acc = new_acc();
    for (var s = chunk.y; s < chunk.y + chunk.z; s++) {
        let segment = plan_table[s];
        norm_range(segment.x, segment.y, segment.y + segment.z, lix, &acc);
    }

    let total = workgroup_combine(lix, acc_sum(acc));
    if (lix == 0u) {
        scratch[chunk.w] = pack_sum(total);
    }
}
