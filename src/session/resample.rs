//! TEMPORARY placeholder until the real resampler lands (being written now).
pub struct Resampler { from: u32, to: u32, pos: f64, last: Option<i16> }
impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Self { Resampler { from: from_hz, to: to_hz, pos: 0.0, last: None } }
    pub fn from_hz(&self) -> u32 { self.from }
    pub fn to_hz(&self) -> u32 { self.to }
    pub fn is_passthrough(&self) -> bool { self.from == self.to }
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.is_passthrough() { out.extend_from_slice(input); return; }
        let step = self.from as f64 / self.to as f64;
        while (self.pos as usize) < input.len() { out.push(input[self.pos as usize]); self.pos += step; }
        self.pos -= input.len() as f64; self.last = input.last().copied();
    }
    pub fn flush(&mut self, _out: &mut Vec<i16>) {}
}
