/* model/cpu/real.h — the scalar type of the CPU kernels, chosen at compile time.
 *
 * The CPU kernels and the executor are written once over `real` and compiled twice:
 * as float into ih_model (the trainer's backend) and, with -DMODEL_REAL_DOUBLE, as double
 * into ih_model_f64, which only the tests link (finite differences need float64). Every
 * symbol that depends on `real` is spelled MODEL_FN(name), which appends "_f64" in the
 * double build, so both libraries can be linked into one program.
 */
#ifndef MODEL_CPU_REAL_H
#define MODEL_CPU_REAL_H

#include <cblas.h>

#ifdef MODEL_REAL_DOUBLE
typedef double real;
#define MODEL_FN(name) name##_f64
#define MODEL_GEMM cblas_dgemm
#else
typedef float real;
#define MODEL_FN(name) name
#define MODEL_GEMM cblas_sgemm
#endif

#endif
