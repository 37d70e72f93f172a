// Gradient bindings read as scalar f32: the fallback for binding windows
// whose byte length is not a multiple of 16 (a buffer whose size is not).
// Same interface as the vec4 path, so the kernels do not change.

// @slot-begin
@group(0) @binding(SLOT_BINDING) var<storage, read_write> grad_SLOT: array<f32>;

fn load4_SLOT(i4: u32) -> vec4<f32> {
    // Lanes past the binding's end read as 0; the kernels mask them anyway.
    let n = arrayLength(&grad_SLOT);
    let ix = vec4<u32>(i4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = ix < vec4<u32>(n);
    let safe = min(ix, vec4<u32>(n - 1u));
    let v = vec4<f32>(grad_SLOT[safe.x], grad_SLOT[safe.y], grad_SLOT[safe.z], grad_SLOT[safe.w]);
    return select(vec4<f32>(0.0), v, ok);
}

fn store4_SLOT(i4: u32, v: vec4<f32>, inside: vec4<bool>) {
    let i = i4 * 4u;
    if (inside.x) {
        grad_SLOT[i] = v.x;
    }
    if (inside.y) {
        grad_SLOT[i + 1u] = v.y;
    }
    if (inside.z) {
        grad_SLOT[i + 2u] = v.z;
    }
    if (inside.w) {
        grad_SLOT[i + 3u] = v.w;
    }
}
// @slot-end
