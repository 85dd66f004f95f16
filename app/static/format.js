// Numbers and durations in the page's words.

// 3 significant decimals, exponent form for the very large and the very small; "—" for none.
export const fmt = (x) =>
  x === null || x === undefined
    ? "—"
    : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3)
      ? x.toExponential(2)
      : x.toFixed(3).replace(/\.?0+$/, "") || "0";

// A score within float32 rounding of 0 (the cue is that stored pattern) reads as 0, not -2.7e-10.
export const fmtScore = (x) => (typeof x === "number" && Math.abs(x) < 1e-6 ? "0" : fmt(x));

// 42 -> "42 s", 886 -> "15 min", 7300 -> "2.0 h".
export const duration = (sec) =>
  sec < 90 ? `${Math.round(sec)} s` : sec < 5400 ? `${Math.round(sec / 60)} min` : `${(sec / 3600).toFixed(1)} h`;
