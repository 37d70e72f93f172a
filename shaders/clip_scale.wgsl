// Scale pass: multiplies each chunk's segments by its group's coefficient.
// A workgroup whose coefficient is exactly 1 returns before touching the
// gradients, so an inactive clip writes nothing and needs no host round
// trip to know it.

// @slot-begin
fn scale_range_SLOT(first: u32, end: u32, lix: u32, c: f32) {
    let walk = team_walk(first, end, lix);
    for (var i4 = walk.start; i4 < walk.end; i4 += LANES) {
        store4_SLOT(i4, load4_SLOT(i4) * c, vec4<bool>(true));
    }
    let edge = edge_vec4(first, end, lix);
    if (edge != NO_EDGE) {
        store4_SLOT(edge, load4_SLOT(edge) * c, lanes_inside(edge, first, end));
    }
}
// @slot-end

fn scale_range(slot: u32, first: u32, end: u32, lix: u32, c: f32) {
    switch slot {
        // @slot-case case SLOTu: { scale_range_SLOT(first, end, lix, c); }
        default: {}
    }
}

@compute @workgroup_size(WG_SIZE)
fn scale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lix: u32,
) {
    let chunk_ix = chunk_index(wg);
    if (chunk_ix >= params.n_chunks) {
        return;
    }
    let chunk = plan_table[params.chunk_base + chunk_ix];
    let c = bitcast<f32>(scratch[params.coef_base + chunk.x].y);
    if (c == 1.0) {
        return;
    }
    for (var s = chunk.y; s < chunk.y + chunk.z; s++) {
        let segment = plan_table[s];
        scale_range(segment.x, segment.y, segment.y + segment.z, lix, c);
    }
}
