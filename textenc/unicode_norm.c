/* unicode_norm.c - table lookups, NFC and str.lower() for the CLIP tokenizer clean-up
 * (see unicode_norm.h). NFC follows UAX #15: full canonical decomposition (Hangul
 * algorithmically), canonical ordering by combining class, then canonical composition
 * with the "blocked" rule. */
#include "textenc/unicode_norm.h"

#include <string.h>

static uint32_t range_lookup(const SlUcRange *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo) hi = mid;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return r[mid].v;
    }
    return 0;
}

int sl_uc_char_class(uint32_t cp) {
    if (cp < 0x80) {
        if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return SL_UC_SPACE;
        if (cp < 0x20 || cp == 0x7f) return SL_UC_DROP;
        return SL_UC_OTHER;
    }
    return (int)range_lookup(sl_uc_class, sl_uc_class_n, cp);
}

static int ccc_of(uint32_t cp) {
    return cp < 0x300 ? 0 : (int)range_lookup(sl_uc_ccc, sl_uc_ccc_n, cp);
}

enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
       HANGUL_LN = 19, HANGUL_VN = 21, HANGUL_TN = 28, HANGUL_NN = 21 * 28, HANGUL_SN = 19 * 21 * 28 };

/* Writes the full decomposition of cp into out (<= SL_UC_MAX_DECOMP); returns its length. */
static size_t decompose(uint32_t cp, uint32_t *out) {
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_SN) {
        uint32_t s = cp - HANGUL_S;
        out[0] = HANGUL_L + s / HANGUL_NN;
        out[1] = HANGUL_V + (s % HANGUL_NN) / HANGUL_TN;
        if (s % HANGUL_TN == 0) return 2;
        out[2] = HANGUL_T + s % HANGUL_TN;
        return 3;
    }
    if (cp >= 0xC0) {
        size_t lo = 0, hi = sl_uc_decomp_n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cp < sl_uc_decomp[mid].cp) hi = mid;
            else if (cp > sl_uc_decomp[mid].cp) lo = mid + 1;
            else {
                memcpy(out, sl_uc_decomp_pool + sl_uc_decomp[mid].off, sl_uc_decomp[mid].len * sizeof(uint32_t));
                return sl_uc_decomp[mid].len;
            }
        }
    }
    out[0] = cp;
    return 1;
}

/* Primary composite of a+b, or 0 if none. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LN && b >= HANGUL_V && b < HANGUL_V + HANGUL_VN)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VN + (b - HANGUL_V)) * HANGUL_TN;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SN && (a - HANGUL_S) % HANGUL_TN == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_TN)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = sl_uc_comp_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const SlUcComp *c = &sl_uc_comp[mid];
        if (a < c->a || (a == c->a && b < c->b)) hi = mid;
        else if (a > c->a || b > c->b) lo = mid + 1;
        else return c->c;
    }
    return 0;
}

size_t sl_uc_nfc(uint32_t *cps, size_t n) {
    size_t i, total = 0;
    int quick = 1;
    for (i = 0; i < n; i++)
        if (cps[i] >= 0x300) { quick = 0; break; }
    if (quick) return n; /* everything below U+0300 is NFC-stable (checked by the generator's author) */

    /* 1. decompose in place, back to front, into the room after the text */
    uint32_t tmp[SL_UC_MAX_DECOMP];
    for (i = 0; i < n; i++) total += decompose(cps[i], tmp);
    size_t w = total;
    for (i = n; i-- > 0;) {
        size_t k = decompose(cps[i], tmp);
        w -= k;
        memmove(cps + w, tmp, k * sizeof(uint32_t));
    }
    /* 2. canonical ordering: stable insertion sort inside runs of non-zero ccc */
    for (i = 1; i < total; i++) {
        int c = ccc_of(cps[i]);
        if (c == 0) continue;
        size_t j = i;
        uint32_t v = cps[i];
        while (j > 0) {
            int p = ccc_of(cps[j - 1]);
            if (p <= c) break;
            cps[j] = cps[j - 1];
            j--;
        }
        cps[j] = v;
    }
    /* 3. canonical composition */
    size_t out = 0, starter = (size_t)-1;
    int last_ccc = -1;
    for (i = 0; i < total; i++) {
        uint32_t cp = cps[i];
        int c = ccc_of(cp);
        if (starter != (size_t)-1) {
            /* blocked if an intervening char has ccc 0 or ccc >= c */
            int blocked = (out > starter + 1) && (last_ccc == 0 || last_ccc >= c);
            if (!blocked) {
                uint32_t comp = compose(cps[starter], cp);
                if (comp) { cps[starter] = comp; continue; }
            }
        }
        if (c == 0) { starter = out; last_ccc = -1; }
        else last_ccc = c;
        cps[out++] = cp;
    }
    return out;
}

static uint32_t sigma_class(uint32_t cp) { return range_lookup(sl_uc_sigma, sl_uc_sigma_n, cp); }

size_t sl_uc_lowercase(uint32_t *out, const uint32_t *cps, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = cps[i];
        if (cp < 0x80) {
            out[o++] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
            continue;
        }
        if (cp == 0x130) { out[o++] = 'i'; out[o++] = 0x307; continue; }
        if (cp == 0x3A3) {
            /* Final_Sigma: cased (case-ignorable)* SIGMA !((case-ignorable)* cased) */
            size_t j = i;
            uint32_t k = 0;
            while (j > 0 && (k = sigma_class(cps[j - 1])) == 2) j--;
            int final = j > 0 && k == 1;
            if (final) {
                j = i + 1;
                while (j < n && (k = sigma_class(cps[j])) == 2) j++;
                final = j == n || k != 1;
            }
            out[o++] = final ? 0x3C2 : 0x3C3;
            continue;
        }
        size_t lo = 0, hi = sl_uc_lower_n;
        uint32_t to = cp;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cp < sl_uc_lower[mid].cp) hi = mid;
            else if (cp > sl_uc_lower[mid].cp) lo = mid + 1;
            else { to = sl_uc_lower[mid].to; break; }
        }
        out[o++] = to;
    }
    return o;
}
