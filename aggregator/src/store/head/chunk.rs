//! Compressed in-memory chunks for the head: Gorilla-style encoding (delta-of-delta
//! timestamps, XOR of value bits), about 1–2 bytes per sample on regular scrapes instead of
//! 16, which is what keeps memory per active series small.
//!
//! A chunk only takes samples newer than its last one; the head keeps out-of-order samples
//! beside the chunks. Must not: reorder or drop samples; decoding gives back exact bits.

use crate::store::{Sample, block::values};

/// Samples per chunk before a new one is started (bounds the decode cost of a lookup).
pub const CHUNK_SAMPLES: u16 = 240;

#[derive(Debug, Default, Clone)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u8,
}

impl Bits {
    fn push_bit(&mut self, bit: bool) {
        if self.used == 0 {
            if self.bytes.len() == self.bytes.capacity() {
                // Grow in small steps: doubling would leave a head chunk (the one being
                // filled, in every series) a third empty on average.
                self.bytes.reserve_exact(32);
            }
            self.bytes.push(0);
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn push(&mut self, value: u64, n: u8) {
        for i in (0..n).rev() {
            self.push_bit(value >> i & 1 == 1);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bit(&mut self) -> bool {
        let b = self.bytes[self.pos / 8] & (0x80 >> (self.pos % 8)) != 0;
        self.pos += 1;
        b
    }

    fn read(&mut self, n: u8) -> u64 {
        let mut v = 0;
        for _ in 0..n {
            v = v << 1 | u64::from(self.bit());
        }
        v
    }
}

/// Timestamp delta-of-delta classes: (prefix bits, prefix length, payload bits).
const DOD_CLASSES: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// Whether `v` fits in `bits` bits of two's complement.
fn fits(v: i64, bits: u8) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

/// Mantissa delta-of-delta classes in integer mode: (prefix, prefix length, payload bits).
const INT_CLASSES: [(u64, u8, u8); 4] = [
    (0b10, 2, 8),
    (0b110, 3, 16),
    (0b1110, 4, 24),
    (0b11110, 5, 36),
];

/// How values are encoded in a chunk.
#[derive(Debug, Clone)]
enum Mode {
    /// XOR of the float bits with the previous value.
    Float {
        last_v: u64,
        leading: u8,
        trailing: u8,
    },
    /// Values are `m / 10^scale` exactly; delta-of-delta of `m`.
    Int {
        scale: i8,
        last_m: i64,
        last_dm: i64,
    },
}

/// One compressed chunk of in-order samples.
#[derive(Debug, Clone)]
pub struct Chunk {
    bits: Bits,
    n: u16,
    first_t: i64,
    last_t: i64,
    last_delta: i64,
    mode: Mode,
}

impl Chunk {
    /// A chunk holding `first`: integer mode when its value is an exact short decimal.
    pub fn new(first: Sample) -> Self {
        let mode = match values::min_scale(first.v) {
            Some(scale) => Mode::Int {
                scale,
                last_m: values::encode_at(first.v, scale).expect("min_scale checked it"),
                last_dm: 0,
            },
            None => Mode::Float {
                last_v: first.v.to_bits(),
                leading: u8::MAX,
                trailing: 0,
            },
        };
        Self::start(first, mode)
    }

    fn start(first: Sample, mode: Mode) -> Self {
        let mut bits = Bits::default();
        bits.push(first.t as u64, 64);
        bits.push(first.v.to_bits(), 64);
        Self {
            bits,
            n: 1,
            first_t: first.t,
            last_t: first.t,
            last_delta: 0,
            mode,
        }
    }

    /// Re-encodes `samples` (sorted) in integer mode at `scale`, if every value fits.
    fn at_scale(samples: &[Sample], scale: i8) -> Option<Self> {
        let first = samples[0];
        let mut chunk = Self::start(
            first,
            Mode::Int {
                scale,
                last_m: values::encode_at(first.v, scale)?,
                last_dm: 0,
            },
        );
        for &s in &samples[1..] {
            let m = values::encode_at(s.v, scale)?;
            chunk.push_time(s.t);
            chunk.push_int(m);
            chunk.n += 1;
        }
        Some(chunk)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Whether the chunk holds no sample (never: a chunk starts with one).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether the chunk is full.
    pub fn is_full(&self) -> bool {
        self.n >= CHUNK_SAMPLES
    }

    /// Oldest timestamp.
    pub fn first_t(&self) -> i64 {
        self.first_t
    }

    /// Newest timestamp.
    pub fn last_t(&self) -> i64 {
        self.last_t
    }

    fn push_time(&mut self, t: i64) {
        let delta = t - self.last_t;
        let dod = delta - self.last_delta;
        if dod == 0 {
            self.bits.push_bit(false);
        } else if let Some(&(prefix, len, bits)) = DOD_CLASSES.iter().find(|c| fits(dod, c.2)) {
            self.bits.push(prefix, len);
            self.bits.push(dod as u64 & ((1 << bits) - 1), bits);
        } else {
            self.bits.push(0b1111, 4);
            self.bits.push(dod as u64, 64);
        }
        self.last_t = t;
        self.last_delta = delta;
    }

    fn push_int(&mut self, m: i64) {
        let Mode::Int {
            last_m, last_dm, ..
        } = &mut self.mode
        else {
            unreachable!("integer push in float mode");
        };
        let dm = m.wrapping_sub(*last_m);
        let dd = dm.wrapping_sub(*last_dm);
        if dd == 0 {
            self.bits.push_bit(false);
        } else if let Some(&(prefix, len, bits)) = INT_CLASSES.iter().find(|c| fits(dd, c.2)) {
            self.bits.push(prefix, len);
            self.bits.push(dd as u64 & ((1 << bits) - 1), bits);
        } else {
            self.bits.push(0b11111, 5);
            self.bits.push(dd as u64, 64);
        }
        *last_m = m;
        *last_dm = dm;
    }

    fn push_float(&mut self, v: u64) {
        let Mode::Float {
            last_v,
            leading: prev_leading,
            trailing: prev_trailing,
        } = &mut self.mode
        else {
            unreachable!("float push in integer mode");
        };
        let xor = v ^ *last_v;
        if xor == 0 {
            self.bits.push_bit(false);
        } else {
            self.bits.push_bit(true);
            let leading = (xor.leading_zeros() as u8).min(31);
            let trailing = xor.trailing_zeros() as u8;
            if *prev_leading != u8::MAX && leading >= *prev_leading && trailing >= *prev_trailing {
                self.bits.push_bit(false);
                let sig = 64 - *prev_leading - *prev_trailing;
                self.bits.push(xor >> *prev_trailing, sig);
            } else {
                self.bits.push_bit(true);
                let sig = 64 - leading - trailing;
                self.bits.push(u64::from(leading), 5);
                // 64 significant bits are written as 0 (they cannot be 0).
                self.bits.push(u64::from(sig) & 63, 6);
                self.bits.push(xor >> trailing, sig);
                *prev_leading = leading;
                *prev_trailing = trailing;
            }
        }
        *last_v = v;
    }

    /// Appends a sample newer than [`Self::last_t`]. Returns false when the value cannot
    /// be encoded in this chunk (a non-decimal value in an integer chunk whose samples do
    /// not fit a larger scale): the caller starts a new chunk with it.
    #[must_use]
    pub fn push(&mut self, s: Sample) -> bool {
        debug_assert!(s.t > self.last_t);
        match self.mode {
            Mode::Float { .. } => {
                self.push_time(s.t);
                self.push_float(s.v.to_bits());
            }
            Mode::Int { scale, .. } => match values::encode_at(s.v, scale) {
                Some(m) => {
                    self.push_time(s.t);
                    self.push_int(m);
                }
                None => {
                    // A value with more decimals: re-encode at its scale if all fit.
                    let Some(k) = values::min_scale(s.v).filter(|&k| k > scale) else {
                        return false;
                    };
                    let mut all = Vec::with_capacity(self.len() + 1);
                    self.decode_into(&mut all);
                    all.push(s);
                    match Self::at_scale(&all, k) {
                        Some(chunk) => {
                            *self = chunk;
                            return true;
                        }
                        None => return false,
                    }
                }
            },
        }
        self.n += 1;
        true
    }

    /// Decodes every sample, in order, into `out`.
    pub fn decode_into(&self, out: &mut Vec<Sample>) {
        out.reserve(self.n as usize);
        let mut r = Reader {
            bytes: &self.bits.bytes,
            pos: 0,
        };
        let mut t = r.read(64) as i64;
        let mut v = r.read(64);
        out.push(Sample {
            t,
            v: f64::from_bits(v),
        });
        let (mut delta, mut leading, mut trailing) = (0i64, 0u8, 0u8);
        let (scale, mut m, mut dm) = match self.mode {
            Mode::Int { scale, .. } => (
                scale,
                values::encode_at(f64::from_bits(v), scale).expect("first value fits"),
                0i64,
            ),
            Mode::Float { .. } => (-1, 0, 0),
        };
        let read_class = |r: &mut Reader<'_>, classes: &[(u64, u8, u8)]| -> i64 {
            if !r.bit() {
                return 0;
            }
            for c in classes {
                if !r.bit() {
                    let raw = r.read(c.2);
                    // Sign-extend.
                    return ((raw << (64 - c.2)) as i64) >> (64 - c.2);
                }
            }
            r.read(64) as i64
        };
        for _ in 1..self.n {
            delta += read_class(&mut r, &DOD_CLASSES);
            t += delta;
            if scale >= 0 {
                dm = dm.wrapping_add(read_class(&mut r, &INT_CLASSES));
                m = m.wrapping_add(dm);
                v = values::decode(m, scale).to_bits();
            } else if r.bit() {
                if r.bit() {
                    leading = r.read(5) as u8;
                    let mut sig = r.read(6) as u8;
                    if sig == 0 {
                        sig = 64;
                    }
                    trailing = 64 - leading - sig;
                }
                let sig = 64 - leading - trailing;
                v ^= r.read(sig) << trailing;
            }
            out.push(Sample {
                t,
                v: f64::from_bits(v),
            });
        }
    }

    /// Releases spare capacity (once the chunk is closed).
    pub fn shrink(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bits_and_irregular_timestamps() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let values = [
            1.0,
            1.0,
            2.5,
            -0.0,
            stale,
            f64::NAN,
            1e300,
            1e-300,
            12345.67,
            0.1,
            f64::INFINITY,
            3.0,
        ];
        let mut times = vec![1_000i64];
        for (i, d) in [
            15_000,
            15_000,
            15_003,
            14_990,
            1,
            10_000_000 + 8192 - 1,
            15_000,
            9_999_999_999,
            15_000,
            15_000,
            2,
        ]
        .iter()
        .enumerate()
        {
            times.push(times[i] + d);
        }
        let samples: Vec<Sample> = times
            .iter()
            .zip(values)
            .map(|(&t, v)| Sample { t, v })
            .collect();
        let chunk = Chunk::new(samples[0]);
        let mut chunks = vec![chunk];
        for &s in &samples[1..] {
            if !chunks.last_mut().unwrap().push(s) {
                chunks.push(Chunk::new(s));
            }
        }
        let mut out = Vec::new();
        for c in &chunks {
            c.decode_into(&mut out);
        }
        let bits = |s: &[Sample]| s.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&samples));
    }

    #[test]
    fn integer_mode_widens_its_scale_and_keeps_bits() {
        let samples: Vec<Sample> = [1000.5, 1001.0, 1010.57, 1010.571, 2e15, 3.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: i as i64 * 15_000,
                v,
            })
            .collect();
        let mut chunks = vec![Chunk::new(samples[0])];
        for &s in &samples[1..] {
            if !chunks.last_mut().unwrap().push(s) {
                chunks.push(Chunk::new(s));
            }
        }
        let mut out = Vec::new();
        for c in &chunks {
            c.decode_into(&mut out);
        }
        let bits = |s: &[Sample]| s.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&samples));
        assert!(
            chunks.len() >= 2,
            "2e15 at scale 3 does not fit: a new chunk"
        );
    }

    #[test]
    fn regular_counter_is_small() {
        let mut chunk = Chunk::new(Sample { t: 0, v: 100.0 });
        for i in 1..CHUNK_SAMPLES as i64 {
            assert!(chunk.push(Sample {
                t: i * 15_000,
                v: 100.0 + (i * 7 % 13) as f64,
            }));
        }
        let per_sample = chunk.heap_bytes() as f64 / chunk.len() as f64;
        assert!(per_sample < 3.0, "{per_sample} B/sample");
    }
}
