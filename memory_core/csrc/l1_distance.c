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
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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

/* ------------------------------------------------------------------------------------
 * Softmax retrieval over L1 scores in one pass over the stored patterns.
 *
 *   logit[b, n] = beta * scale[b] * masked_L1(q[b], x[n])          (scale < 0: -1 or -D/k)
 *   out[b]      = sum_n softmax_n(logit[b, :]) v[n]                (v: (n, dv), may be x)
 *   lmax[b]     = max_n logit[b, n],  lsum[b] = sum_n exp(logit[b, n] - lmax[b])
 *
 * Why: at a moderate beta a cue gives thousands of patterns a non-zero weight, so
 * "distances, then weights @ values" reads every stored pattern from memory twice, where
 * faiss's search reads it once. Here a block of kblock patterns (small enough to stay in
 * L1/L2) gets its distances from the same tiles as ams_l1_distances, then its weights
 * fold into a running max / sum / weighted sum (online softmax, as in flash attention)
 * while the block is still in cache: one pass from memory in all.
 *
 * Exactness: weights are relative to the running max, and a block whose max is higher
 * rescales the running sums once. A weight below exp(-CUTOFF) of the running max (so of
 * the final max too) is skipped: its share of the result is below N * 1.8e-35 relative,
 * far below float32 rounding, and skipping it keeps subnormals (slow) out of the sums.
 * Maxima and sums are in double; the weighted sums in float32, like the torch path.
 */
#define CUTOFF 80.0 /* exp(-80) = 1.8e-35: still a normal float32 */
#define VR 2        /* value vectors per register tile: QR cues x VR * W entries */

/* One register tile of the weighted sums, for nq (<= QR) cues and nv (<= VR) vectors of
 * entries [k, k + nv * W) of the values:
 *   acc[i][k..] = r[i] * acc[i][k..] + sum_t wt[i * nb + rows[t]] * v[rows[t]][k..]
 * (a small GEMM over the rows with a non-zero weight; nq and nv are constants where it
 * is inlined, so the accumulators live in registers). */
static inline __attribute__((always_inline)) void weighted_tile(
    const float *wt, int64_t nb, const int32_t *rows, int64_t count, const float *v, int64_t dv,
    const float *r, float *const *acc, int64_t k, const int nq, const int nv) {
    vf a[QR][VR];
    for (int i = 0; i < QR; i++)
        for (int u = 0; u < VR; u++) a[i][u] = (vf){0};
    for (int64_t t = 0; t < count; t++) {
        const int64_t j = rows[t];
        const float *vr = v + j * dv + k;
        vf xv[VR];
        for (int u = 0; u < nv; u++) xv[u] = load_f(vr + u * W);
        for (int i = 0; i < nq; i++) {
            const vf wv = (vf){0} + wt[i * nb + j];
            for (int u = 0; u < nv; u++) a[i][u] += wv * xv[u];
        }
    }
    for (int i = 0; i < nq; i++)
        for (int u = 0; u < nv; u++) {
            vf o = load_f(acc[i] + k + u * W) * ((vf){0} + r[i]) + a[i][u];
            memcpy(acc[i] + k + u * W, &o, sizeof o);
        }
}

static inline __attribute__((always_inline)) void weighted_rows_n(
    const float *wt, int64_t nb, const int32_t *rows, int64_t count, const float *v, int64_t dv,
    const float *r, float *const *acc, const int nq) {
    const int64_t dvv = dv - dv % W;
    int64_t k = 0;
    for (; k + VR * W <= dvv; k += VR * W) weighted_tile(wt, nb, rows, count, v, dv, r, acc, k, nq, VR);
    for (; k < dvv; k += W) weighted_tile(wt, nb, rows, count, v, dv, r, acc, k, nq, 1);
    for (; k < dv; k++) /* the entries after the last full vector */
        for (int i = 0; i < nq; i++) {
            float s = 0.0f;
            for (int64_t t = 0; t < count; t++) s += wt[i * nb + rows[t]] * v[rows[t] * dv + k];
            acc[i][k] = r[i] * acc[i][k] + s;
        }
}

static void weighted_rows(const float *wt, int64_t nb, const int32_t *rows, int64_t count, const float *v,
                          int64_t dv, const float *r, float *const *acc, int nq) {
    switch (nq) {
    case 1: weighted_rows_n(wt, nb, rows, count, v, dv, r, acc, 1); break;
    case 2: weighted_rows_n(wt, nb, rows, count, v, dv, r, acc, 2); break;
    case 3: weighted_rows_n(wt, nb, rows, count, v, dv, r, acc, 3); break;
    default: weighted_rows_n(wt, nb, rows, count, v, dv, r, acc, 4); break;
    }
}

/* Fold one block of scores into the running state of each cue.
 * dist: (b, nb) scores, overwritten with the weights exp(logit - running max) (0 where
 * below exp(-CUTOFF)); v: the block's rows of the values, or NULL (no output);
 * mx, sm: (b,) running max and sum; acc: (b, dv) running weighted sums, or NULL;
 * rows: nb ints of scratch. */
static void softmax_fold(float *dist, int64_t nb, int64_t b, double beta, const float *v, int64_t dv,
                         double *mx, double *sm, float *acc, int32_t *rows) {
    for (int64_t b0 = 0; b0 < b; b0 += QR) {
        const int nq = (b - b0) < QR ? (int)(b - b0) : QR;
        float r[QR];
        for (int i = 0; i < nq; i++) {
            float *wi = dist + (b0 + i) * nb;
            double *m = mx + b0 + i, *s = sm + b0 + i;
            double bm = -INFINITY;
            for (int64_t j = 0; j < nb; j++) {
                const double l = beta * (double)wi[j];
                if (l > bm) bm = l;
            }
            r[i] = 1.0f;
            if (bm > *m) { /* a new maximum: rescale what came before (nothing on the first block) */
                const double f = *s > 0.0 ? exp(*m - bm) : 0.0;
                r[i] = f < exp(-CUTOFF) ? 0.0f : (float)f;
                *s = r[i] == 0.0f ? 0.0 : *s * f;
                *m = bm;
            }
            const double lo = *m - CUTOFF;
            for (int64_t j = 0; j < nb; j++) {
                const double l = beta * (double)wi[j];
                const double w = l < lo ? 0.0 : exp(l - *m); /* below exp(-80) of the max: adds nothing */
                *s += w;
                wi[j] = (float)w;
            }
        }
        if (!acc) continue;
        /* the rows that any of these cues weighs (a sharp softmax: few) */
        int64_t count = 0;
        for (int64_t j = 0; j < nb; j++) {
            int any = 0;
            for (int i = 0; i < nq; i++) any |= dist[(b0 + i) * nb + j] != 0.0f;
            if (any) rows[count++] = (int32_t)j;
        }
        int rescale = 0;
        for (int i = 0; i < nq; i++) rescale |= r[i] != 1.0f;
        if (count == 0 && !rescale) continue;
        float *ap[QR];
        for (int i = 0; i < nq; i++) ap[i] = acc + (b0 + i) * dv;
        weighted_rows(dist + b0 * nb, nb, rows, count, v, dv, r, ap, nq);
    }
}

/* x: (n, d) keys; v: (n, dv) values (may equal x) or NULL (no output: only lmax, lsum);
 * q, m, mstride, scale: as for ams_l1_distances; out: (b, dv) or NULL; lmax, lsum: (b,).
 * The patterns are split into nthreads contiguous ranges, each with its own running
 * state, merged at the end. Returns 0, or -1 when out of memory. */
int ams_l1_softmax(const float *x, int64_t n, const float *v, int64_t dv, const float *q, int64_t b,
                   const int32_t *m, int64_t mstride, const float *scale, double beta, int64_t d,
                   float *out, double *lmax, double *lsum, int64_t kblock, int nthreads) {
    const int64_t nblocks = (n + kblock - 1) / kblock;
    int parts = nthreads < 1 ? 1 : nthreads;
    if (parts > nblocks) parts = nblocks > 0 ? (int)nblocks : 1;
    const int with_out = v != NULL && out != NULL;
    double *mx = malloc(sizeof(double) * parts * b), *sm = malloc(sizeof(double) * parts * b);
    float *dist = malloc(sizeof(float) * parts * b * kblock);
    int32_t *rows = malloc(sizeof(int32_t) * parts * kblock);
    float *acc = with_out ? calloc((size_t)(parts * b * dv), sizeof(float)) : NULL;
    if (!mx || !sm || !dist || !rows || (with_out && !acc)) {
        free(mx), free(sm), free(dist), free(rows), free(acc);
        return -1;
    }
    for (int64_t i = 0; i < parts * b; i++) mx[i] = -INFINITY, sm[i] = 0.0;

#pragma omp parallel for schedule(static, 1) num_threads(parts)
    for (int p = 0; p < parts; p++) {
        const int64_t blk0 = nblocks * p / parts, blk1 = nblocks * (p + 1) / parts;
        for (int64_t blk = blk0; blk < blk1; blk++) {
            const int64_t n0 = blk * kblock, nb = n0 + kblock < n ? kblock : n - n0;
            float *dp = dist + (int64_t)p * b * kblock;
            /* distances of the block, (b, nb) with row stride nb (a block of keys from x + n0 * d) */
            block(x + n0 * d, q, m, mstride, scale, d, dp, nb, 0, b, 0, nb);
            softmax_fold(dp, nb, b, beta, with_out ? v + n0 * dv : NULL, dv, mx + (int64_t)p * b,
                         sm + (int64_t)p * b, with_out ? acc + (int64_t)p * b * dv : NULL, rows + (int64_t)p * kblock);
        }
    }

    /* merge the parts: a common max, the sums rescaled to it */
    for (int64_t i = 0; i < b; i++) {
        double top = -INFINITY, total = 0.0;
        for (int p = 0; p < parts; p++)
            if (mx[p * b + i] > top) top = mx[p * b + i];
        for (int p = 0; p < parts; p++)
            if (sm[p * b + i] > 0.0) total += sm[p * b + i] * exp(mx[p * b + i] - top);
        lmax[i] = top, lsum[i] = total;
        if (!with_out) continue;
        float *oi = out + i * dv;
        memset(oi, 0, dv * sizeof *oi);
        for (int p = 0; p < parts; p++) {
            if (sm[p * b + i] == 0.0) continue;
            const float f = (float)(exp(mx[p * b + i] - top) / total);
            const float *ai = acc + ((int64_t)p * b + i) * dv;
            for (int64_t k = 0; k < dv; k++) oi[k] += f * ai[k];
        }
    }
    free(mx), free(sm), free(dist), free(rows), free(acc);
    return 0;
}
