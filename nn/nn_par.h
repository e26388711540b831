/* nn_par.h - internal to nn/: when a loop is worth an OpenMP team.
 *
 * Waking a second thread costs tens of microseconds (more when the machine is
 * loaded and the thread sleeps with OMP_WAIT_POLICY=passive), so memory-bound
 * loops over fewer than SL_NN_PAR_MIN floats run on the calling thread
 * (`#pragma omp parallel for if (SL_NN_PAR(n))`). Results never depend on it:
 * every parallel loop here writes disjoint elements with a fixed order.
 */
#ifndef SL_NN_PAR_H
#define SL_NN_PAR_H

#ifndef SL_NN_PAR_MIN
#define SL_NN_PAR_MIN 65536
#endif
#define SL_NN_PAR(n) ((n) >= SL_NN_PAR_MIN)

#endif
