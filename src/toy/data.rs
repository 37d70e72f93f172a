//! The synthetic task: images of one coloured shape at one place on a
//! noisy dark background, captioned "a red circle on the left". Everything
//! is generated from a seed, so no download is needed and a run can be
//! reproduced bit for bit.

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same data and initial weights on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, decorrelated from nearby seeds.
    pub fn new(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        r.next_u64();
        r
    }

    /// An independent stream for (`seed`, `a`, `b`), e.g. one per step.
    pub fn stream(seed: u64, a: u64, b: u64) -> Self {
        Rng::new(seed.wrapping_mul(0x100_0000_01b3) ^ a.wrapping_mul(0xff51_afd7_ed55_8ccd) ^ b)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Colour words, in token order.
pub const COLOURS: [&str; 6] = ["red", "green", "blue", "yellow", "white", "purple"];
const RGB: [[f32; 3]; 6] = [
    [0.95, 0.15, 0.1],
    [0.15, 0.85, 0.2],
    [0.2, 0.35, 1.0],
    [0.95, 0.9, 0.15],
    [0.95, 0.95, 0.95],
    [0.7, 0.2, 0.9],
];
/// Shape words, in token order.
pub const SHAPES: [&str; 4] = ["square", "circle", "triangle", "cross"];
/// Places, and how a caption says them.
pub const PLACES: [(&str, [&str; 3]); 5] = [
    ("left", ["on", "the", "left"]),
    ("right", ["on", "the", "right"]),
    ("top", ["at", "the", "top"]),
    ("bottom", ["at", "the", "bottom"]),
    ("centre", ["in", "the", "centre"]),
];

/// The vocabulary: specials first, then caption words. Its size is a
/// multiple of 4, as the kernels read rows as `vec4`.
pub const VOCAB: [&str; 24] = [
    "<pad>",
    "<|endoftext|>",
    "<image>",
    "<|endofchunk|>",
    "a",
    "red",
    "green",
    "blue",
    "yellow",
    "white",
    "purple",
    "square",
    "circle",
    "triangle",
    "cross",
    "on",
    "at",
    "in",
    "the",
    "left",
    "right",
    "top",
    "bottom",
    "centre",
];
/// Padding token id.
pub const PAD: u32 = 0;
/// End of text.
pub const EOS: u32 = 1;
/// OpenFlamingo's `<image>` token.
pub const IMAGE: u32 = 2;
/// OpenFlamingo's `<|endofchunk|>` token.
pub const END_OF_CHUNK: u32 = 3;
/// Caption words per image: "a colour shape on the place".
pub const CAPTION_LEN: usize = 6;

/// Id of `word` in [`VOCAB`].
pub fn token_id(word: &str) -> Option<u32> {
    VOCAB.iter().position(|w| *w == word).map(|i| i as u32)
}

/// Text of token ids, space separated.
pub fn detokenize(ids: &[u32]) -> String {
    ids.iter()
        .map(|&i| VOCAB.get(i as usize).copied().unwrap_or("<?>"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one image shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Index into [`COLOURS`].
    pub colour: u8,
    /// Index into [`SHAPES`].
    pub shape: u8,
    /// Index into [`PLACES`].
    pub place: u8,
}

impl ImageSpec {
    /// The caption's token ids (without `<image>` or `<|endofchunk|>`).
    pub fn caption(&self) -> [u32; CAPTION_LEN] {
        let p = PLACES[self.place as usize].1;
        let id = |w: &str| token_id(w).expect("caption words are in VOCAB");
        [
            id("a"),
            id(COLOURS[self.colour as usize]),
            id(SHAPES[self.shape as usize]),
            id(p[0]),
            id(p[1]),
            id(p[2]),
        ]
    }
}

/// Image side in pixels.
pub const IMAGE_SIZE: usize = 32;

/// Draws `spec` as a 3 x 32 x 32 (CHW) image with values in [0, 1]: a noisy
/// dark background and a shape 12 to 15 pixels across, jittered around its
/// place. Size matters: with shapes of 11 to 14 pixels a default run ended
/// at 89% exact match, its errors mostly squares taken for circles.
pub fn render(spec: ImageSpec, rng: &mut Rng) -> Vec<f32> {
    let n = IMAGE_SIZE;
    let mut img = vec![0f32; 3 * n * n];
    for v in img.iter_mut() {
        *v = 0.12 * rng.uniform();
    }
    let size = 12.0 + rng.below(4) as f32;
    let half = size / 2.0;
    let (cx, cy) = match spec.place {
        0 => (8.0, 16.0),
        1 => (24.0, 16.0),
        2 => (16.0, 8.0),
        3 => (16.0, 24.0),
        _ => (16.0, 16.0),
    };
    let cx = cx + rng.below(5) as f32 - 2.0;
    let cy = cy + rng.below(5) as f32 - 2.0;
    let shade = 0.85 + 0.15 * rng.uniform();
    let rgb = RGB[spec.colour as usize];
    for y in 0..n {
        for x in 0..n {
            let dx = x as f32 + 0.5 - cx;
            let dy = y as f32 + 0.5 - cy;
            let inside = match spec.shape {
                0 => dx.abs() <= half && dy.abs() <= half,
                1 => dx * dx + dy * dy <= half * half,
                2 => dy.abs() <= half && dx.abs() <= (dy + half) / 2.0,
                _ => {
                    let arm = size / 6.0;
                    (dx.abs() <= arm && dy.abs() <= half) || (dy.abs() <= arm && dx.abs() <= half)
                }
            };
            if inside {
                for c in 0..3 {
                    img[c * n * n + y * n + x] = rgb[c] * shade;
                }
            }
        }
    }
    img
}

/// RGBA bytes of a CHW image with values in [0, 1].
pub fn to_rgba(img: &[f32]) -> Vec<u8> {
    let n = IMAGE_SIZE * IMAGE_SIZE;
    let mut out = Vec::with_capacity(4 * n);
    for i in 0..n {
        for c in 0..3 {
            out.push((img[c * n + i].clamp(0.0, 1.0) * 255.0).round() as u8);
        }
        out.push(255);
    }
    out
}

/// Patch vectors of a CHW image, `patch x patch` patches in row-major
/// order, each flattened as (channel, y, x) to match a PyTorch conv weight
/// `[out, 3, patch, patch]`. Values are centred and scaled.
pub fn patchify(img: &[f32], patch: usize) -> Vec<f32> {
    let n = IMAGE_SIZE;
    let per = n / patch;
    let mut out = Vec::with_capacity(img.len());
    for py in 0..per {
        for px in 0..per {
            for c in 0..3 {
                for y in 0..patch {
                    for x in 0..patch {
                        let v = img[c * n * n + (py * patch + y) * n + px * patch + x];
                        out.push((v - 0.25) / 0.35);
                    }
                }
            }
        }
    }
    out
}

/// A pool of generated images with their specs.
#[derive(Clone, Debug)]
pub struct ImagePool {
    /// What each image shows.
    pub specs: Vec<ImageSpec>,
    /// CHW pixels of each image, [0, 1].
    pub pixels: Vec<Vec<f32>>,
}

impl ImagePool {
    /// `count` images from `rng`, classes drawn uniformly.
    pub fn generate(count: usize, rng: &mut Rng) -> Self {
        let mut specs = Vec::with_capacity(count);
        let mut pixels = Vec::with_capacity(count);
        for _ in 0..count {
            let spec = ImageSpec {
                colour: rng.below(COLOURS.len() as u32) as u8,
                shape: rng.below(SHAPES.len() as u32) as u8,
                place: rng.below(PLACES.len() as u32) as u8,
            };
            pixels.push(render(spec, rng));
            specs.push(spec);
        }
        Self { specs, pixels }
    }
}

/// One sequence: its tokens, and the images (pool indices) its `<image>`
/// tokens stand for, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    /// Token ids, without padding.
    pub tokens: Vec<u32>,
    /// Pool index of each image.
    pub images: Vec<u32>,
}

/// `<image> caption <|endofchunk|>` for each image, then `<|endoftext|>`:
/// OpenFlamingo's LAION form for one image, its MMC4 form for two.
pub fn sequence(pool: &ImagePool, images: &[u32]) -> Sequence {
    let mut tokens = Vec::new();
    for &i in images {
        tokens.push(IMAGE);
        tokens.extend_from_slice(&pool.specs[i as usize].caption());
        tokens.push(END_OF_CHUNK);
    }
    tokens.push(EOS);
    Sequence {
        tokens,
        images: images.to_vec(),
    }
}
