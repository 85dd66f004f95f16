/* Masked L1 (manhattan) distances between cues and stored patterns, for memory_core.kernels.
 *
 *   out[b * ldo + n] = scale[b] * sum_d ( |q[b, d] - x[n, d]|  if d is known for cue b, else 0 )
 *
 * (scale: e.g. -1 for negated distances, -D/k to rescale a masked cue; applied here so
 * that the caller needs no further pass over the (B, N) result.)
 *
 * The mask is given as a bit pattern per entry: 0x7fffffff where known, 0 where unknown.
 * AND-ing a float's bits with it clears the sign bit (|.|) or zeroes the entry, so a
 * masked distance costs no more than an unmasked one. An unmasked call passes one row
 * of 0x7fffffff with mask_stride 0.
 *
 * Why a kernel: torch.cdist(p=1) runs a scalar loop per (cue, pattern) pair, and faiss's
 * IndexFlat(METRIC_L1) streams every stored pattern from memory once per cue. Here a
 * register tile of QR cues x KR patterns shares every load, and a block of patterns is
 * reused from cache by a block of cues, so a batch of cues is compute-bound, not
 * memory-bound. Portable C with GCC vector extensions: W = 16 (AVX-512), 8 (AVX2) or
 * 4 (SSE / NEON) floats per vector, chosen by memory_core/kernels.py from the CPU flags.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef W
#define W 8
#endif
#define QR 4 /* cues per register tile */
#if W >= 16
#define KR 4 /* patterns per register tile: 16 accumulators of 32 registers */
#else
#define KR 3 /* 12 accumulators of 16 registers */
#endif

typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

static inline vf load_f(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline vi load_i(const int32_t *p) { vi v; memcpy(&v, p, sizeof v); return v; }
static inline float hsum(vf v) {
    float s = 0.0f;
    for (int i = 0; i < W; i++) s += v[i];
    return s;
}
static inline float masked_abs(float t, int32_t m) {
    int32_t u;
    memcpy(&u, &t, 4);
    u &= m;
    memcpy(&t, &u, 4);
    return t;
}

/* One register tile: cues q[0..nq) x patterns x[0..nk), nq <= QR, nk <= KR.
 * Missing rows repeat row 0 (same loads, results not written). */
static void tile_4xk(const float *const *qp, const int32_t *const *mp, const float *sc, int nq,
                     const float *const *xp, int nk, int64_t d, float *out, int64_t ldo) {
    const int64_t dv = d - d % W;
    vf acc[QR][KR];
    for (int i = 0; i < QR; i++)
        for (int j = 0; j < KR; j++) acc[i][j] = (vf){0};
    for (int64_t k = 0; k < dv; k += W) {
        vf xv[KR];
#pragma GCC unroll 8
        for (int j = 0; j < KR; j++) xv[j] = load_f(xp[j] + k);
#pragma GCC unroll 8
        for (int i = 0; i < QR; i++) {
            const vf qv = load_f(qp[i] + k);
            const vi mv = load_i(mp[i] + k);
#pragma GCC unroll 8
            for (int j = 0; j < KR; j++) acc[i][j] += (vf)((vi)(qv - xv[j]) & mv);
        }
    }
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nk; j++) {
            float s = hsum(acc[i][j]);
            for (int64_t k = dv; k < d; k++) s += masked_abs(qp[i][k] - xp[j][k], mp[i][k]);
            out[i * ldo + j] = sc[i] * s;
        }
}

/* A single cue against patterns one at a time: a purely sequential stream through the
 * stored patterns, which is what a memory-bound single-cue search wants. */
static void row_1x1(const float *q, const int32_t *m, float sc, const float *x, int64_t d, float *out) {
    const int64_t dv = d - d % W;
    vf acc0 = (vf){0}, acc1 = (vf){0};
    int64_t k = 0;
    for (; k + 2 * W <= dv; k += 2 * W) {
        acc0 += (vf)((vi)(load_f(q + k) - load_f(x + k)) & load_i(m + k));
        acc1 += (vf)((vi)(load_f(q + k + W) - load_f(x + k + W)) & load_i(m + k + W));
    }
    for (; k < dv; k += W) acc0 += (vf)((vi)(load_f(q + k) - load_f(x + k)) & load_i(m + k));
    float s = hsum(acc0 + acc1);
    for (k = dv; k < d; k++) s += masked_abs(q[k] - x[k], m[k]);
    *out = sc * s;
}

static void block(const float *x, const float *q, const int32_t *m, int64_t mstride, const float *scale,
                  int64_t d, float *out, int64_t ldo, int64_t b0, int64_t b1, int64_t n0, int64_t n1) {
    for (int64_t b = b0; b < b1; b += QR) {
        const int nq = (b1 - b) < QR ? (int)(b1 - b) : QR;
        if (nq == 1) { /* a lone cue: stream the patterns one by one */
            for (int64_t n = n0; n < n1; n++)
                row_1x1(q + b * d, m + b * mstride, scale[b], x + n * d, d, out + b * ldo + n);
            continue;
        }
        const float *qp[QR];
        const int32_t *mp[QR];
        float sc[QR];
        for (int i = 0; i < QR; i++) {
            const int64_t r = b + (i < nq ? i : 0);
            qp[i] = q + r * d;
            mp[i] = m + r * mstride;
            sc[i] = scale[r];
        }
        for (int64_t n = n0; n < n1; n += KR) {
            const int nk = (n1 - n) < KR ? (int)(n1 - n) : KR;
            const float *xp[KR];
            for (int j = 0; j < KR; j++) xp[j] = x + (n + (j < nk ? j : 0)) * d;
            tile_4xk(qp, mp, sc, nq, xp, nk, d, out + b * ldo + n, ldo);
        }
    }
}

/* x: (n, d) patterns; q: (b, d) cues; m: cue masks, row r at m + r * mstride;
 * scale: (b,) factors; out: (b, ldo), columns [0, n) written. Work is split into blocks
 * of qblock cues x kblock patterns, shared by nthreads OpenMP threads. */
void ams_l1_distances(const float *x, int64_t n, const float *q, int64_t b, const int32_t *m,
                      int64_t mstride, const float *scale, int64_t d, float *out, int64_t ldo,
                      int64_t qblock, int64_t kblock, int nthreads) {
    const int64_t nqb = (b + qblock - 1) / qblock, nkb = (n + kblock - 1) / kblock;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t kb = 0; kb < nkb; kb++)
        for (int64_t qb = 0; qb < nqb; qb++) {
            const int64_t b0 = qb * qblock, b1 = b0 + qblock < b ? b0 + qblock : b;
            const int64_t n0 = kb * kblock, n1 = n0 + kblock < n ? n0 + kblock : n;
            block(x, q, m, mstride, scale, d, out, ldo, b0, b1, n0, n1);
        }
}
