//! Synthetic training data on disk, and the readers the real workloads' data stage uses.
//!
//! The data stage of an interleaved job should do what a real input pipeline does: storage
//! reads, decoding and augmentation on the CPU. So the data sets here are real binary files
//! (generated once, deterministically from a seed, and shared by every job that asks for the
//! same kind and size), and the readers fetch every batch from the file with positioned reads.
//!
//! Formats (all integers little-endian):
//! - image shard: `MURIIMG1`, u64 count, u32 height, u32 width, u32 channels, u32 classes,
//!   then `count` records of `u16 label` + `height × width × channels` u8 pixels (HWC).
//! - token shard: `MURITOK1`, u64 count, u32 vocab, u32 reserved (0), then `count` u16 tokens.
//!
//! Everything random goes through [`Rng`], whose whole state is one `u64`, so a job can
//! checkpoint its data position and augmentation stream exactly.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};

/// SplitMix64: tiny, fast, and its state is a single `u64` (trivially checkpointable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent stream for `purpose`, so init, data and exploration never share draws.
    pub fn derive(seed: u64, purpose: u64) -> Rng {
        let mut r = Rng::new(seed ^ purpose.wrapping_mul(0xA24B_AED4_963E_E407));
        r.next_u64();
        Rng::new(r.next_u64())
    }

    /// The whole generator state (what a checkpoint stores).
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; returns 0 for `n == 0`). Multiply-shift, bias negligible.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller; one of the pair is discarded to keep the state one u64).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

pub const IMAGE_MAGIC: &[u8; 8] = b"MURIIMG1";
pub const TOKEN_MAGIC: &[u8; 8] = b"MURITOK1";
const IMAGE_HEADER_LEN: u64 = 32;
const TOKEN_HEADER_LEN: u64 = 24;

/// Pixel normalisation: `(v / 255 − MEAN) / STD`, so values lie in `[-2, 2]`.
pub const PIXEL_MEAN: f32 = 0.5;
pub const PIXEL_STD: f32 = 0.25;
/// Pixels the random crop may shift by (the padding, torchvision's `RandomCrop(padding=2)`).
pub const CROP_PAD: usize = 2;

/// Which synthetic data set to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Images,
    Tokens,
}

/// Size and seed of a generated data set. `images`/`image_size`/`channels`/`classes` apply to
/// [`DataKind::Images`], `tokens`/`vocab` to [`DataKind::Tokens`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOptions {
    pub images: usize,
    pub image_size: usize,
    pub channels: usize,
    pub classes: usize,
    pub tokens: usize,
    pub vocab: usize,
    pub seed: u64,
}

impl Default for DataOptions {
    /// What the default models train on: 4096 32×32 RGB images of 10 classes (12.6 MB) and
    /// 1 Mi tokens over a 512-word vocabulary (2 MiB).
    fn default() -> Self {
        DataOptions {
            images: 4096,
            image_size: 32,
            channels: 3,
            classes: 10,
            tokens: 1 << 20,
            vocab: 512,
            seed: 2022,
        }
    }
}

/// Header of an image shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub count: u64,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    pub classes: u32,
}

impl ImageHeader {
    /// Bytes of one record: the u16 label and the pixels.
    pub fn record_len(&self) -> u64 {
        2 + self.pixels_per_image() as u64
    }

    pub fn pixels_per_image(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }

    fn encode(&self) -> [u8; IMAGE_HEADER_LEN as usize] {
        let mut h = [0u8; IMAGE_HEADER_LEN as usize];
        h[..8].copy_from_slice(IMAGE_MAGIC);
        h[8..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..20].copy_from_slice(&self.height.to_le_bytes());
        h[20..24].copy_from_slice(&self.width.to_le_bytes());
        h[24..28].copy_from_slice(&self.channels.to_le_bytes());
        h[28..32].copy_from_slice(&self.classes.to_le_bytes());
        h
    }

    fn decode(h: &[u8; IMAGE_HEADER_LEN as usize], path: &Path) -> anyhow::Result<ImageHeader> {
        ensure!(
            &h[..8] == IMAGE_MAGIC,
            "{}: not an image shard (bad magic {:?})",
            path.display(),
            String::from_utf8_lossy(&h[..8])
        );
        let header = ImageHeader {
            count: u64_at(h, 8),
            height: u32_at(h, 16),
            width: u32_at(h, 20),
            channels: u32_at(h, 24),
            classes: u32_at(h, 28),
        };
        ensure!(
            header.count > 0
                && header.height > 0
                && header.width > 0
                && header.channels > 0
                && (1..=u16::MAX as u32 + 1).contains(&header.classes),
            "{}: image header has a zero or out-of-range field: {header:?}",
            path.display()
        );
        Ok(header)
    }
}

/// Header of a token shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHeader {
    pub count: u64,
    pub vocab: u32,
}

impl TokenHeader {
    fn encode(&self) -> [u8; TOKEN_HEADER_LEN as usize] {
        let mut h = [0u8; TOKEN_HEADER_LEN as usize];
        h[..8].copy_from_slice(TOKEN_MAGIC);
        h[8..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..20].copy_from_slice(&self.vocab.to_le_bytes());
        h
    }

    fn decode(h: &[u8; TOKEN_HEADER_LEN as usize], path: &Path) -> anyhow::Result<TokenHeader> {
        ensure!(
            &h[..8] == TOKEN_MAGIC,
            "{}: not a token shard (bad magic {:?})",
            path.display(),
            String::from_utf8_lossy(&h[..8])
        );
        let header = TokenHeader {
            count: u64_at(h, 8),
            vocab: u32_at(h, 16),
        };
        ensure!(
            header.count > 1 && (1..=u16::MAX as u32 + 1).contains(&header.vocab),
            "{}: token header out of range: {header:?}",
            path.display()
        );
        Ok(header)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// The file `generate` writes for `kind` and `opts`: the name encodes everything that
/// determines the contents, so jobs asking for the same data share one file.
pub fn shard_path(dir: &Path, kind: DataKind, opts: &DataOptions) -> PathBuf {
    let name = match kind {
        DataKind::Images => format!(
            "images-n{}-{}x{}x{}-c{}-s{}.muriimg",
            opts.images, opts.image_size, opts.image_size, opts.channels, opts.classes, opts.seed
        ),
        DataKind::Tokens => format!(
            "tokens-n{}-v{}-s{}.muritok",
            opts.tokens, opts.vocab, opts.seed
        ),
    };
    dir.join(name)
}

/// Writes the `kind` data set for `opts` into `dir` unless a valid one is already there, and
/// returns its path. Writes go to a unique temporary file renamed into place, so jobs that
/// generate the same shard concurrently never see a half-written file.
pub fn generate(dir: &Path, kind: DataKind, opts: &DataOptions) -> anyhow::Result<PathBuf> {
    check_options(kind, opts)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = shard_path(dir, kind, opts);
    if shard_is_valid(&path, kind) {
        return Ok(path);
    }
    let tmp = dir.join(format!(
        ".{}.{}-{:?}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("shard"),
        std::process::id(),
        std::thread::current().id()
    ));
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    match kind {
        DataKind::Images => write_images(&mut out, opts),
        DataKind::Tokens => write_tokens(&mut out, opts),
    }
    .and_then(|()| out.flush().map_err(anyhow::Error::from))
    .with_context(|| format!("writing {}", tmp.display()))?;
    drop(out);
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// Paths of the default data sets.
#[derive(Debug, Clone)]
pub struct DefaultData {
    pub images: PathBuf,
    pub tokens: PathBuf,
}

/// Generates (or finds) what the default CV and NLP models read: [`DataOptions::default`].
pub fn generate_default(dir: &Path) -> anyhow::Result<DefaultData> {
    let opts = DataOptions::default();
    Ok(DefaultData {
        images: generate(dir, DataKind::Images, &opts)?,
        tokens: generate(dir, DataKind::Tokens, &opts)?,
    })
}

fn check_options(kind: DataKind, o: &DataOptions) -> anyhow::Result<()> {
    match kind {
        DataKind::Images => ensure!(
            o.images > 0
                && o.image_size > 2 * CROP_PAD
                && (1..=4).contains(&o.channels)
                && (2..=u16::MAX as usize).contains(&o.classes),
            "image options out of range: {o:?}"
        ),
        DataKind::Tokens => ensure!(
            o.tokens > 1 && (8..=u16::MAX as usize).contains(&o.vocab),
            "token options out of range: {o:?}"
        ),
    }
    Ok(())
}

/// A shard whose header opens and whose length matches is reused (files are only ever
/// renamed into place complete, so this is enough).
fn shard_is_valid(path: &Path, kind: DataKind) -> bool {
    match kind {
        DataKind::Images => ImageReader::open(path).is_ok(),
        DataKind::Tokens => TokenReader::open(path).is_ok(),
    }
}

/// What makes one class recognisable: a stripe colour, background colour, stripe
/// orientation and frequency, and a bright blob's position.
struct ClassStyle {
    fg: Vec<f64>,
    bg: Vec<f64>,
    angle: f64,
    freq: f64,
    blob: (f64, f64),
}

fn class_style(seed: u64, class: usize, channels: usize) -> ClassStyle {
    let mut r = Rng::derive(seed, 1000 + class as u64);
    ClassStyle {
        fg: (0..channels).map(|_| r.range(0.35, 1.0)).collect(),
        bg: (0..channels).map(|_| r.range(0.0, 0.4)).collect(),
        angle: (class % 4) as f64 * std::f64::consts::FRAC_PI_4,
        freq: 2.0 + ((class / 4) % 3) as f64,
        blob: (r.range(0.2, 0.8), r.range(0.2, 0.8)),
    }
}

fn write_images(out: &mut impl Write, o: &DataOptions) -> anyhow::Result<()> {
    let header = ImageHeader {
        count: o.images as u64,
        height: o.image_size as u32,
        width: o.image_size as u32,
        channels: o.channels as u32,
        classes: o.classes as u32,
    };
    out.write_all(&header.encode())?;
    let styles: Vec<ClassStyle> = (0..o.classes)
        .map(|c| class_style(o.seed, c, o.channels))
        .collect();
    let mut rng = Rng::derive(o.seed, 1);
    let mut record = vec![0u8; header.record_len() as usize];
    for _ in 0..o.images {
        let label = rng.below(o.classes as u64) as usize;
        record[..2].copy_from_slice(&(label as u16).to_le_bytes());
        draw_image(&styles[label], o, &mut rng, &mut record[2..]);
        out.write_all(&record)?;
    }
    Ok(())
}

/// One HWC image of `style`: stripes with a random phase, a blob, brightness jitter, noise.
fn draw_image(style: &ClassStyle, o: &DataOptions, rng: &mut Rng, pixels: &mut [u8]) {
    let size = o.image_size as f64;
    let phase = rng.range(0.0, std::f64::consts::TAU);
    let gain = rng.range(0.8, 1.2);
    let (bx, by) = (
        style.blob.0 + rng.range(-0.08, 0.08),
        style.blob.1 + rng.range(-0.08, 0.08),
    );
    let (ca, sa) = (style.angle.cos(), style.angle.sin());
    for y in 0..o.image_size {
        for x in 0..o.image_size {
            let (u, v) = (x as f64 / size, y as f64 / size);
            let stripe =
                0.5 + 0.5 * (std::f64::consts::TAU * style.freq * (u * ca + v * sa) + phase).sin();
            let blob = (-((u - bx).powi(2) + (v - by).powi(2)) / 0.01).exp();
            for c in 0..o.channels {
                let base = style.bg[c] + (style.fg[c] - style.bg[c]) * stripe;
                let value = (base + 0.5 * blob) * gain + 0.08 * rng.normal();
                pixels[(y * o.image_size + x) * o.channels + c] =
                    (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// Successors per token in the Markov chain and their probabilities (the rest of the mass,
/// 5 %, jumps to a uniform random token so the chain never gets stuck).
const SUCCESSOR_PROBS: [f64; 4] = [0.5, 0.25, 0.12, 0.08];

fn write_tokens(out: &mut impl Write, o: &DataOptions) -> anyhow::Result<()> {
    let header = TokenHeader {
        count: o.tokens as u64,
        vocab: o.vocab as u32,
    };
    out.write_all(&header.encode())?;
    let mut table_rng = Rng::derive(o.seed, 2);
    let successors: Vec<[u16; 4]> = (0..o.vocab)
        .map(|_| std::array::from_fn(|_| table_rng.below(o.vocab as u64) as u16))
        .collect();
    let mut rng = Rng::derive(o.seed, 3);
    let mut token = rng.below(o.vocab as u64) as u16;
    let mut chunk = Vec::with_capacity(2 * 4096);
    for i in 0..o.tokens {
        chunk.extend_from_slice(&token.to_le_bytes());
        token = next_token(&successors[token as usize], o.vocab, &mut rng);
        if chunk.len() >= 2 * 4096 || i + 1 == o.tokens {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    Ok(())
}

fn next_token(successors: &[u16; 4], vocab: usize, rng: &mut Rng) -> u16 {
    let mut u = rng.uniform();
    for (next, p) in successors.iter().zip(SUCCESSOR_PROBS) {
        if u < p {
            return *next;
        }
        u -= p;
    }
    rng.below(vocab as u64) as u16
}

/// Opens `path` and checks that it is at least `min_len` bytes long.
fn open_checked(path: &Path) -> anyhow::Result<(File, u64)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading metadata of {}", path.display()))?
        .len();
    Ok((file, len))
}

fn read_header<const N: usize>(file: &File, len: u64, path: &Path) -> anyhow::Result<[u8; N]> {
    ensure!(
        len >= N as u64,
        "{}: truncated: {len} bytes is shorter than the {N}-byte header",
        path.display()
    );
    let mut h = [0u8; N];
    file.read_exact_at(&mut h, 0)
        .with_context(|| format!("reading the header of {}", path.display()))?;
    Ok(h)
}

/// A normalised, augmented NCHW batch.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
}

/// Reads an image shard batch by batch. The position (next record, wrapping around at the
/// end) is part of a job's checkpoint.
pub struct ImageReader {
    file: File,
    path: PathBuf,
    header: ImageHeader,
    position: u64,
    raw: Vec<u8>,
}

impl ImageReader {
    /// Opens a shard, checking the magic, the header and that no record is missing.
    pub fn open(path: &Path) -> anyhow::Result<ImageReader> {
        let (file, len) = open_checked(path)?;
        let header = ImageHeader::decode(&read_header(&file, len, path)?, path)?;
        let need = header
            .count
            .checked_mul(header.record_len())
            .and_then(|n| n.checked_add(IMAGE_HEADER_LEN))
            .with_context(|| format!("{}: header sizes overflow", path.display()))?;
        ensure!(
            len >= need,
            "{}: truncated: {len} bytes, the header promises {need}",
            path.display()
        );
        Ok(ImageReader {
            file,
            path: path.to_path_buf(),
            header,
            position: 0,
            raw: Vec::new(),
        })
    }

    pub fn header(&self) -> ImageHeader {
        self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Index of the next record to read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to record `position` (used by restore, and to start jobs at different places).
    pub fn set_position(&mut self, position: u64) -> anyhow::Result<()> {
        ensure!(
            position < self.header.count,
            "{}: position {position} is beyond the {} records",
            self.path.display(),
            self.header.count
        );
        self.position = position;
        Ok(())
    }

    /// Reads the next `batch` records (sequentially, wrapping around), decodes them to
    /// normalised f32 and applies a random 2-px-padded crop and horizontal flip.
    pub fn next_batch(&mut self, batch: usize, rng: &mut Rng) -> anyhow::Result<ImageBatch> {
        ensure!(batch > 0, "batch size must be positive");
        self.read_records(batch)?;
        let h = self.header;
        let (height, width, channels) = (h.height as usize, h.width as usize, h.channels as usize);
        let plane = height * width;
        let mut pixels = vec![0f32; batch * channels * plane];
        let mut labels = Vec::with_capacity(batch);
        let rec_len = h.record_len() as usize;
        for (i, record) in self.raw.chunks_exact(rec_len).enumerate() {
            let label = u16::from_le_bytes([record[0], record[1]]);
            ensure!(
                (label as u32) < h.classes,
                "{}: label {label} of a record near {} is not below {} classes",
                self.path.display(),
                self.position,
                h.classes
            );
            labels.push(label as i64);
            let out = &mut pixels[i * channels * plane..(i + 1) * channels * plane];
            augment(&record[2..], out, (height, width, channels), rng);
        }
        Ok(ImageBatch {
            pixels,
            labels,
            shape: [batch, channels, height, width],
        })
    }

    /// Fills `self.raw` with `batch` records from the current position: at most two
    /// positioned reads per wrap of the file.
    fn read_records(&mut self, batch: usize) -> anyhow::Result<()> {
        let rec_len = self.header.record_len();
        self.raw.resize(batch * rec_len as usize, 0);
        let mut filled = 0usize;
        while filled < batch {
            let run = (batch - filled).min((self.header.count - self.position) as usize);
            let offset = IMAGE_HEADER_LEN + self.position * rec_len;
            let dst = &mut self.raw[filled * rec_len as usize..(filled + run) * rec_len as usize];
            self.file.read_exact_at(dst, offset).with_context(|| {
                format!(
                    "reading {run} records at record {} of {}",
                    self.position,
                    self.path.display()
                )
            })?;
            filled += run;
            self.position = (self.position + run as u64) % self.header.count;
        }
        Ok(())
    }
}

/// Decodes one HWC u8 image into CHW f32 `out`, shifted by a random crop offset in
/// `-CROP_PAD..=CROP_PAD` (zero padding, i.e. black) and flipped horizontally half the time.
fn augment(
    src: &[u8],
    out: &mut [f32],
    (height, width, channels): (usize, usize, usize),
    rng: &mut Rng,
) {
    let span = 2 * CROP_PAD as u64 + 1;
    let dy = rng.below(span) as isize - CROP_PAD as isize;
    let dx = rng.below(span) as isize - CROP_PAD as isize;
    let flip = rng.next_u64() & 1 == 1;
    let black = -PIXEL_MEAN / PIXEL_STD;
    for y in 0..height {
        for x in 0..width {
            let xo = if flip { width - 1 - x } else { x };
            let (sy, sx) = (y as isize + dy, xo as isize + dx);
            let inside = (0..height as isize).contains(&sy) && (0..width as isize).contains(&sx);
            for c in 0..channels {
                out[c * height * width + y * width + x] = if inside {
                    let v = src[(sy as usize * width + sx as usize) * channels + c];
                    (v as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD
                } else {
                    black
                };
            }
        }
    }
}

/// `batch` windows of `seq_len` inputs and the next-token targets (row-major `[batch, seq_len]`).
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub batch: usize,
    pub seq_len: usize,
}

/// Reads a token shard in consecutive windows of `seq_len + 1` tokens. At the end of the
/// file it wraps to a random offset below `seq_len` (a new "epoch" with shifted windows).
pub struct TokenReader {
    file: File,
    path: PathBuf,
    header: TokenHeader,
    position: u64,
    raw: Vec<u8>,
}

impl TokenReader {
    /// Opens a shard, checking the magic, the header and the length.
    pub fn open(path: &Path) -> anyhow::Result<TokenReader> {
        let (file, len) = open_checked(path)?;
        let header = TokenHeader::decode(&read_header(&file, len, path)?, path)?;
        let need = header
            .count
            .checked_mul(2)
            .and_then(|n| n.checked_add(TOKEN_HEADER_LEN))
            .with_context(|| format!("{}: header sizes overflow", path.display()))?;
        ensure!(
            len >= need,
            "{}: truncated: {len} bytes, the header promises {need}",
            path.display()
        );
        Ok(TokenReader {
            file,
            path: path.to_path_buf(),
            header,
            position: 0,
            raw: Vec::new(),
        })
    }

    pub fn header(&self) -> TokenHeader {
        self.header
    }

    /// Index of the next window's first token.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn set_position(&mut self, position: u64) -> anyhow::Result<()> {
        ensure!(
            position < self.header.count,
            "{}: position {position} is beyond the {} tokens",
            self.path.display(),
            self.header.count
        );
        self.position = position;
        Ok(())
    }

    /// Reads the next `batch` windows and splits each into inputs and shifted targets.
    pub fn next_batch(
        &mut self,
        batch: usize,
        seq_len: usize,
        rng: &mut Rng,
    ) -> anyhow::Result<TokenBatch> {
        ensure!(
            batch > 0 && seq_len > 0,
            "batch and seq_len must be positive"
        );
        let window = seq_len as u64 + 1;
        if window + seq_len as u64 > self.header.count {
            bail!(
                "{}: {} tokens are too few for windows of {window}",
                self.path.display(),
                self.header.count
            );
        }
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for _ in 0..batch {
            if self.position + window > self.header.count {
                self.position = rng.below(seq_len as u64);
            }
            let tokens = self.read_window(window)?;
            inputs.extend_from_slice(&tokens[..seq_len]);
            targets.extend_from_slice(&tokens[1..]);
            self.position += seq_len as u64;
        }
        Ok(TokenBatch {
            inputs,
            targets,
            batch,
            seq_len,
        })
    }

    fn read_window(&mut self, window: u64) -> anyhow::Result<Vec<i64>> {
        self.raw.resize(2 * window as usize, 0);
        let offset = TOKEN_HEADER_LEN + 2 * self.position;
        self.file
            .read_exact_at(&mut self.raw, offset)
            .with_context(|| {
                format!(
                    "reading {window} tokens at {} of {}",
                    self.position,
                    self.path.display()
                )
            })?;
        let vocab = self.header.vocab;
        self.raw
            .chunks_exact(2)
            .map(|b| {
                let t = u16::from_le_bytes([b[0], b[1]]);
                ensure!(
                    (t as u32) < vocab,
                    "{}: token {t} near {} is not below the vocabulary {vocab}",
                    self.path.display(),
                    self.position
                );
                Ok(t as i64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DataOptions {
        DataOptions {
            images: 50,
            image_size: 12,
            channels: 3,
            classes: 4,
            tokens: 5000,
            vocab: 64,
            seed: 7,
        }
    }

    #[test]
    fn image_header_round_trips() {
        let h = ImageHeader {
            count: 123,
            height: 8,
            width: 9,
            channels: 3,
            classes: 10,
        };
        assert_eq!(ImageHeader::decode(&h.encode(), Path::new("x")).unwrap(), h);
        let t = TokenHeader {
            count: 77,
            vocab: 300,
        };
        assert_eq!(TokenHeader::decode(&t.encode(), Path::new("x")).unwrap(), t);
    }

    #[test]
    fn generation_is_deterministic_and_shared() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for kind in [DataKind::Images, DataKind::Tokens] {
            let pa = generate(a.path(), kind, &small()).unwrap();
            let pb = generate(b.path(), kind, &small()).unwrap();
            assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
            // A second request finds the same file.
            assert_eq!(generate(a.path(), kind, &small()).unwrap(), pa);
        }
        let mut other = small();
        other.seed = 8;
        let pc = generate(b.path(), DataKind::Tokens, &other).unwrap();
        let pa = shard_path(a.path(), DataKind::Tokens, &small());
        assert_ne!(std::fs::read(pa).unwrap(), std::fs::read(pc).unwrap());
    }

    #[test]
    fn bad_magic_and_truncation_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.muriimg");
        std::fs::write(&bad, b"NOTMAGIC-and-some-more-bytes-to-fill-a-header").unwrap();
        let err = ImageReader::open(&bad).err().unwrap().to_string();
        assert!(
            err.contains("bad magic") && err.contains("bad.muriimg"),
            "{err}"
        );
        assert!(TokenReader::open(&bad).is_err());

        let good = generate(dir.path(), DataKind::Images, &small()).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.muriimg");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let err = ImageReader::open(&cut).err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&cut, &bytes[..5]).unwrap();
        assert!(ImageReader::open(&cut).is_err());
        assert!(ImageReader::open(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn image_batches_have_the_right_shape_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), DataKind::Images, &small()).unwrap();
        let mut reader = ImageReader::open(&path).unwrap();
        let mut rng = Rng::new(1);
        for _ in 0..4 {
            // 4 × 16 > 50 records: exercises the wrap-around.
            let b = reader.next_batch(16, &mut rng).unwrap();
            assert_eq!(b.shape, [16, 3, 12, 12]);
            assert_eq!(b.pixels.len(), 16 * 3 * 12 * 12);
            assert_eq!(b.labels.len(), 16);
            assert!(b.labels.iter().all(|&l| (0..4).contains(&l)));
            let lo = -PIXEL_MEAN / PIXEL_STD;
            let hi = (1.0 - PIXEL_MEAN) / PIXEL_STD;
            assert!(b.pixels.iter().all(|&p| (lo..=hi).contains(&p)));
        }
        assert_eq!(reader.position(), (4 * 16) % 50);
    }

    #[test]
    fn same_position_and_rng_give_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), DataKind::Images, &small()).unwrap();
        let mut a = ImageReader::open(&path).unwrap();
        let mut b = ImageReader::open(&path).unwrap();
        a.set_position(45).unwrap();
        b.set_position(45).unwrap();
        let (mut ra, mut rb) = (Rng::new(3), Rng::new(3));
        let (x, y) = (
            a.next_batch(8, &mut ra).unwrap(),
            b.next_batch(8, &mut rb).unwrap(),
        );
        assert_eq!(x.pixels, y.pixels);
        assert_eq!(x.labels, y.labels);
        assert!(a.set_position(50).is_err());
    }

    #[test]
    fn token_windows_are_shifted_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), DataKind::Tokens, &small()).unwrap();
        let mut reader = TokenReader::open(&path).unwrap();
        let mut rng = Rng::new(2);
        for _ in 0..100 {
            let b = reader.next_batch(4, 16, &mut rng).unwrap();
            assert_eq!(b.inputs.len(), 64);
            for row in 0..4 {
                let i = &b.inputs[row * 16..(row + 1) * 16];
                let t = &b.targets[row * 16..(row + 1) * 16];
                assert_eq!(&i[1..], &t[..15]);
            }
            assert!(b
                .inputs
                .iter()
                .chain(&b.targets)
                .all(|&t| (0..64).contains(&t)));
        }
    }

    #[test]
    fn token_stream_is_predictable() {
        // The Markov chain's top successor should follow a token about half the time.
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), DataKind::Tokens, &small()).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let tokens: Vec<u16> = bytes[TOKEN_HEADER_LEN as usize..]
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut counts = vec![vec![0u32; 64]; 64];
        for w in tokens.windows(2) {
            counts[w[0] as usize][w[1] as usize] += 1;
        }
        let top: u32 = counts.iter().map(|r| *r.iter().max().unwrap()).sum();
        let share = top as f64 / (tokens.len() - 1) as f64;
        assert!(share > 0.4, "top-successor share {share}");
    }

    #[test]
    fn rng_is_reproducible_and_uniform_enough() {
        let mut a = Rng::new(5);
        let mut b = Rng::new(a.state());
        assert_eq!(a.next_u64(), b.next_u64());
        let mean = (0..10_000).map(|_| a.uniform()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02);
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert_ne!(Rng::derive(1, 1).state(), Rng::derive(1, 2).state());
    }
}
