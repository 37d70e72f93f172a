// Prelude of the attention kernels (forward and backward, portable and
// subgroup): head rows as 4 x 4 matrices, their dot product and store, and
// the online softmax. Each kernel's file declares the uniform block `p`,
// whose `dh` these read.

// A head row of dh <= 16 floats as the columns of a 4 x 4 matrix, zero
// past dh. `off` is a multiple of 4.
fn head_row(off: u32) -> mat4x4<f32> {
    let dh4 = p.dh / 4u;
    let b = off / 4u;
    let z = vec4<f32>(0.0);
    return mat4x4<f32>(select(z, ld4(b), dh4 > 0u), select(z, ld4(b + 1u), dh4 > 1u),
        select(z, ld4(b + 2u), dh4 > 2u), select(z, ld4(b + 3u), dh4 > 3u));
}

// The head row at `off`, or zeros when `ok` is false, read from a safe
// address so that every lane of a subgroup can load unconditionally.
fn row_or_zero(off: u32, ok: bool) -> mat4x4<f32> {
    let m = head_row(select(0u, off, ok));
    let z = vec4<f32>(0.0);
    return mat4x4<f32>(select(z, m[0], ok), select(z, m[1], ok), select(z, m[2], ok),
        select(z, m[3], ok));
}

fn dot16(a: mat4x4<f32>, b: mat4x4<f32>) -> f32 {
    return dot(a[0], b[0]) + dot(a[1], b[1]) + dot(a[2], b[2]) + dot(a[3], b[3]);
}

// The first dh floats of v to a head row; dh and `off` are multiples of 4.
fn store_row(off: u32, v: mat4x4<f32>) {
    for (var i = 0u; i < p.dh / 4u; i++) {
        st4(off / 4u + i, v[i]);
    }
}

// Softmax-weighted sum of value rows, one score at a time, rescaling the
// running sum whenever a larger score arrives.
struct Online {
    mx: f32,
    sum: f32,
    o: mat4x4<f32>,
}

fn online_new() -> Online {
    return Online(F32_LOWEST, 0.0, mat4x4<f32>());
}

fn online_add(acc: ptr<function, Online>, s: f32, v: mat4x4<f32>) {
    let m_new = max((*acc).mx, s);
    let decay = exp((*acc).mx - m_new);
    let e = exp(s - m_new);
    (*acc).sum = (*acc).sum * decay + e;
    (*acc).o = (*acc).o * decay + v * e;
    (*acc).mx = m_new;
}

// 1 / sum, or 0 for a query that saw no key.
fn online_inv(acc: Online) -> f32 {
    if acc.sum > 0.0 {
        return 1.0 / acc.sum;
    }
    return 0.0;
}
