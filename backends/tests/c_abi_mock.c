/* backend.h compiled as C99 (dlpack's contrib/mock_c.c idea): a complete, tiny backend table in
 * plain C. abi_test.cpp includes the same header as C++ and drives this table through the
 * handle, so both languages agree on the layout. The "kernel" copies V's first key into every
 * output row: enough to show data flowing through DLTensors. */
#include <stddef.h>
#include <string.h>

#include "attncheck/backend.h"

static attncheck_status mock_get_profile(const attncheck_backend* self, DLDataType input,
                                         attncheck_numerics_profile* profile) {
  (void)self;
  if (input.code != kDLFloat || input.bits != 32 || input.lanes != 1) return kAttncheckNotSupported;
  memset(profile, 0, sizeof *profile);
  profile->struct_size = (uint32_t)sizeof *profile;
  profile->input_dtype = input;
  profile->score_dtype = input;
  profile->probability_dtype = input;
  profile->accumulator_dtype = input;
  profile->output_dtype = input;
  profile->accumulation_rounding = kAttncheckRoundNearest;
  profile->products_per_rounding = 1;
  profile->empty_row = kAttncheckEmptyRowNaN;
  profile->deterministic = 1;
  return kAttncheckOk;
}

static attncheck_status mock_supports(const attncheck_backend* self, const attncheck_problem* problem,
                                      DLDataType input, DLDeviceType device, char* reason, size_t reason_size) {
  static const char why[] = "the C mock handles Lk = 1 only";
  (void)self;
  (void)input;
  (void)device;
  if (problem->k_len == 1) return kAttncheckOk;
  if (reason != NULL && reason_size > 0) {
    size_t n = sizeof why < reason_size ? sizeof why : reason_size;
    memcpy(reason, why, n);
    reason[n - 1] = '\0';
  }
  return kAttncheckNotSupported;
}

static attncheck_status mock_forward(attncheck_backend* self, const attncheck_problem* problem,
                                     const attncheck_attention_tensors* tensors) {
  float* out = (float*)tensors->out->data;
  const float* v = (const float*)tensors->v->data;
  int64_t rows = problem->batch * problem->q_heads * problem->q_len;
  int64_t r, d;
  (void)self;
  /* Rule 3 of backend.h's versioning, and ATTNCHECK_HAS_FIELD compiling as C. */
  if (problem->struct_size < ATTNCHECK_PROBLEM_SIZE_2_0 || !ATTNCHECK_HAS_FIELD(tensors, attncheck_attention_tensors, lse))
    return kAttncheckInvalidProblem;
  if (problem->k_len != 1 || problem->batch != 1 || problem->kv_heads != 1) return kAttncheckNotSupported;
  for (r = 0; r < rows; ++r)
    for (d = 0; d < problem->v_dim; ++d) out[r * problem->v_dim + d] = v[d];
  return kAttncheckOk;
}

static const char* mock_last_error(const attncheck_backend* self) {
  (void)self;
  return "the C mock handles Lk = 1 only";
}

static void mock_destroy(attncheck_backend* self) { (void)self; }

attncheck_backend* attncheck_c_mock_entry(void);
attncheck_backend* attncheck_c_mock_entry(void) {
  static attncheck_backend table;
  table.abi_version.major = ATTNCHECK_ABI_VERSION_MAJOR;
  table.abi_version.minor = ATTNCHECK_ABI_VERSION_MINOR;
  table.struct_size = (uint32_t)sizeof table;
  table.name = "c-mock";
  table.description = "backend.h compiled as C";
  table.context = NULL;
  table.device.device_type = kDLCPU;
  table.device.device_id = 0;
  table.get_profile = mock_get_profile;
  table.supports = mock_supports;
  table.forward = mock_forward;
  table.forward_layer = NULL;
  table.last_error = mock_last_error;
  table.destroy = mock_destroy;
  return &table;
}

/* A plug-in built against the 2.0 header: its table and profile end where 2.0's did
 * (ATTNCHECK_BACKEND_SIZE_2_0, ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0). Whatever lies past them is
 * not its own: bytes there are filled with garbage, which the suite must never read, and the 2.1
 * fields must take their defaults. */
static attncheck_status mock_2_0_get_profile(const attncheck_backend* self, DLDataType input,
                                             attncheck_numerics_profile* profile) {
  attncheck_status status = mock_get_profile(self, input, profile);
  if (status != kAttncheckOk) return status;
  memset((char*)profile + ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0, 0x7f,
         sizeof *profile - ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0);
  profile->struct_size = (uint32_t)ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0;
  return kAttncheckOk;
}

/* Past a 2.0 table's end: never to be called. It declares a profile no caller could accept. */
static attncheck_status mock_2_0_past_the_end(const attncheck_backend* self, const attncheck_problem* problem,
                                              DLDataType input, attncheck_numerics_profile* profile) {
  (void)self;
  (void)problem;
  (void)input;
  memset(profile, 0x7f, sizeof *profile);
  return kAttncheckInternalError;
}

attncheck_backend* attncheck_c_mock_2_0_entry(void);
attncheck_backend* attncheck_c_mock_2_0_entry(void) {
  static attncheck_backend table;
  table = *attncheck_c_mock_entry();
  table.abi_version.minor = 0;
  table.struct_size = (uint32_t)ATTNCHECK_BACKEND_SIZE_2_0;
  table.name = "c-mock-2.0";
  table.get_profile = mock_2_0_get_profile;
  table.get_problem_profile = mock_2_0_past_the_end;
  return &table;
}

/* A 2.1 plug-in with a per-problem profile: above one key its path rounds V to fp16 and writes
 * LSE = 0 for an empty row. */
static attncheck_status mock_2_1_get_problem_profile(const attncheck_backend* self, const attncheck_problem* problem,
                                                     DLDataType input, attncheck_numerics_profile* profile) {
  attncheck_status status = mock_get_profile(self, input, profile);
  if (status != kAttncheckOk) return status;
  if (problem->k_len > 1) {
    profile->value_rounding.code = kDLFloat;
    profile->value_rounding.bits = 16;
    profile->value_rounding.lanes = 1;
    profile->empty_row_lse = kAttncheckEmptyRowLseZero;
  }
  return kAttncheckOk;
}

attncheck_backend* attncheck_c_mock_2_1_entry(void);
attncheck_backend* attncheck_c_mock_2_1_entry(void) {
  static attncheck_backend table;
  table = *attncheck_c_mock_entry();
  table.name = "c-mock-2.1";
  table.get_problem_profile = mock_2_1_get_problem_profile;
  return &table;
}
