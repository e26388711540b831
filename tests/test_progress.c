/* test_progress.c - core/progress.c into a file (plain lines every interval
 * plus the final one), quiet mode, unknown totals, s/it, and a pseudo
 * terminal (in-place redraw with '\r'). Times are passed explicitly. */
#include <fcntl.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include "core/progress.h"
#include "test_util.h"

/* Reads the whole tmpfile back. */
static char *slurp(FILE *f) {
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    return s;
}

static int count_char(const char *s, char c) {
    int n = 0;
    for (; *s; s++) n += *s == c;
    return n;
}

static void test_file_lines(void) {
    FILE *f = tmpfile();
    SlProgress p;
    sl_progress_begin(&p, "train", 100, f, 0);
    CHECK(!p.tty, "tmpfile taken for a terminal");
    char extra[32];
    for (int i = 1; i <= 100; i++) {
        snprintf(extra, sizeof extra, "loss %.3f", 1.0 / i);
        sl_progress_update_at(&p, i, extra, 0.5 * i); /* 2 it/s for 50 s */
    }
    sl_progress_end_at(&p, 50.0);
    char *s = slurp(f);
    printf("--- file output ---\n%s---\n", s);
    /* One line per 5 s: t = 5, 10, ..., 50; the last one is already final. */
    CHECK(count_char(s, '\n') == 10, "expected 10 lines, got %d", count_char(s, '\n'));
    CHECK(strchr(s, '\r') == NULL, "carriage return in a log file");
    const char *first = "train  10/100   10%  2.00 it/s  elapsed 0:05  eta 0:45  loss 0.100\n";
    CHECK(strncmp(s, first, strlen(first)) == 0, "first line differs:\n%.*s", (int)strlen(first), s);
    const char *last = "train  100/100  100%  2.00 it/s  elapsed 0:50  eta 0:00  loss 0.010\n";
    size_t n = strlen(s);
    CHECK(n >= strlen(last) && strcmp(s + n - strlen(last), last) == 0, "final line differs");
    free(s);
    fclose(f);

    /* Fast work: nothing until the end, then exactly one 100% line. */
    f = tmpfile();
    sl_progress_begin(&p, "encode", 7, f, 0);
    for (int i = 1; i <= 7; i++) sl_progress_update_at(&p, i, NULL, 0.1 * i);
    sl_progress_end_at(&p, 0.7);
    s = slurp(f);
    CHECK(count_char(s, '\n') == 1 && strstr(s, "7/7") && strstr(s, "100%"), "short run: %s", s);
    free(s);
    fclose(f);

    /* Slow steps show s/it; an unknown total shows no percent or ETA; hours. */
    f = tmpfile();
    sl_progress_begin(&p, "", 0, f, 0);
    sl_progress_update_at(&p, 3, "x", 4000.0);
    sl_progress_end_at(&p, 4000.0);
    s = slurp(f);
    CHECK(strcmp(s, "3  1333.33 s/it  elapsed 1:06:40  x\n") == 0, "unknown total: '%s'", s);
    free(s);
    fclose(f);

    /* Quiet prints nothing, and NULL out is quiet; the real clock path works. */
    f = tmpfile();
    sl_progress_begin(&p, "q", 10, f, 1);
    for (int i = 1; i <= 10; i++) sl_progress_update(&p, i, "loss 1");
    sl_progress_end(&p);
    CHECK(ftell(f) == 0, "quiet wrote %ld bytes", ftell(f));
    fclose(f);
    sl_progress_begin(&p, "null", 10, NULL, 0);
    sl_progress_update(&p, 5, NULL);
    sl_progress_end(&p);
    f = tmpfile();
    sl_progress_begin(&p, "clock", 3, f, 0);
    for (int i = 1; i <= 3; i++) sl_progress_update(&p, i, NULL);
    sl_progress_end(&p);
    s = slurp(f);
    CHECK(count_char(s, '\n') == 1 && strstr(s, "clock  3/3  100%"), "real clock run: '%s'", s);
    free(s);
    fclose(f);
}

static void test_terminal(void) {
    int master = -1, slave = -1;
    if (openpty(&master, &slave, NULL, NULL, NULL) != 0) {
        printf("skip terminal test: no pseudo terminal\n");
        return;
    }
    struct termios tio;
    tcgetattr(slave, &tio);
    cfmakeraw(&tio); /* no "\n" -> "\r\n" translation */
    tcsetattr(slave, TCSANOW, &tio);
    FILE *out = fdopen(slave, "w");
    SlProgress p;
    sl_progress_begin(&p, "train", 4, out, 0);
    CHECK(p.tty, "pseudo terminal not detected");
    sl_progress_update_at(&p, 1, "loss 0.500000", 0.5);
    sl_progress_update_at(&p, 2, "loss 0.5", 1.0);
    sl_progress_update_at(&p, 3, NULL, 1.02); /* within 0.1 s: no redraw */
    sl_progress_update_at(&p, 4, NULL, 2.0);
    sl_progress_end_at(&p, 2.0);
    fclose(out);
    char buf[4096];
    int fl = fcntl(master, F_GETFL);
    fcntl(master, F_SETFL, fl | O_NONBLOCK);
    ssize_t n = 0, r;
    while (n < (ssize_t)sizeof buf - 1 && (r = read(master, buf + n, sizeof buf - 1 - (size_t)n)) > 0) n += r;
    buf[n > 0 ? n : 0] = '\0';
    close(master);
    printf("--- terminal output (\\r shown as |) ---\n");
    for (char *c = buf; *c; c++) putchar(*c == '\r' ? '|' : *c);
    printf("---\n");
    CHECK(count_char(buf, '\r') == 4, "expected 4 redraws, got %d", count_char(buf, '\r'));
    CHECK(count_char(buf, '\n') == 1 && n > 0 && buf[n - 1] == '\n', "terminal output must end with one newline");
    CHECK(strstr(buf, "[#####...............]") && strstr(buf, "[####################] 4/4  100%"), "bar missing");
    /* The shorter second line is padded over the first one's leftover. */
    const char *second = strstr(buf + 1, "\r");
    CHECK(second && strstr(second, "loss 0.5     \r") != NULL, "leftover characters not blanked");
}

int main(void) {
    test_file_lines();
    test_terminal();
    return sl_test_finish("test_progress");
}
