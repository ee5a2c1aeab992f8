// The ABI header in C and C++, the conversions, and the handle's mapping of statuses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "attncheck/backend.h"
#include "attncheck/backend_handle.h"
#include "attncheck/backend_impl.h"

extern "C" attncheck_backend* attncheck_c_mock_entry(void);
extern "C" attncheck_backend* attncheck_c_mock_2_0_entry(void);
extern "C" attncheck_backend* attncheck_c_mock_2_1_entry(void);

namespace attncheck {
namespace {

// A plug-in built against the 2.0 header still loads: its shorter table has no
// get_problem_profile (the pointer past its end is never called) and its shorter profile's 2.1
// fields take their defaults, whatever bytes lie past its struct_size.
TEST(CAbi, A20PluginLoadsWithThe21FieldsAtTheirDefaults) {
  Backend backend(attncheck_c_mock_2_0_entry(), "c-mock-2.0");
  EXPECT_EQ(backend.table()->struct_size, ATTNCHECK_BACKEND_SIZE_2_0);
  EXPECT_FALSE(backend.has_problem_profiles());
  const auto profile = backend.profile(DType::F32);
  ASSERT_TRUE(profile.has_value());
  EXPECT_EQ(profile->empty_row, EmptyRowConvention::NaN);  // a 2.0 field, as declared
  EXPECT_FALSE(profile->query_rounding || profile->key_rounding || profile->value_rounding);
  EXPECT_FALSE(profile->mask_dtype || profile->row_sum_accumulator);
  EXPECT_EQ(profile->keys_per_partial_sum, 0);
  EXPECT_EQ(profile->kv_splits, 0);
  EXPECT_EQ(profile->empty_row_lse, EmptyRowLse::NegativeInfinity);
  EXPECT_FALSE(profile->masked_keys_weighted_by_zero);
  Problem p;
  p.k_len = 5;
  const auto per_problem = backend.profile(p, DType::F32);  // falls back to get_profile
  ASSERT_TRUE(per_problem.has_value());
  EXPECT_EQ(*per_problem, *profile);
}

// A 2.1 plug-in's get_problem_profile is asked per problem.
TEST(CAbi, A21PluginDeclaresItsProfilePerProblem) {
  Backend backend(attncheck_c_mock_2_1_entry(), "c-mock-2.1");
  ASSERT_TRUE(backend.has_problem_profiles());
  Problem one_key, long_path;
  one_key.k_len = 1;
  long_path.k_len = 64;
  const auto a = backend.profile(one_key, DType::F32), b = backend.profile(long_path, DType::F32);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(a->value_rounding.has_value());
  EXPECT_EQ(a->empty_row_lse, EmptyRowLse::NegativeInfinity);
  ASSERT_TRUE(b->value_rounding.has_value());
  EXPECT_EQ(*b->value_rounding, DType::F16);
  EXPECT_EQ(b->empty_row_lse, EmptyRowLse::Zero);
  EXPECT_FALSE(backend.profile(long_path, DType::F16).has_value()) << "f16 is not supported by any path";
}

// ABI 2.3's options never reach a table that predates them: a 2.0 plug-in would compute an ALiBi
// or sink problem as if the option were absent, so the handle declines it with the reason.
TEST(CAbi, OptionsOfALaterMinorNeverReachAnOlderPlugin) {
  Backend old_plugin(attncheck_c_mock_2_0_entry(), "c-mock-2.0");
  Problem p;
  p.k_len = 3;
  const auto plain = old_plugin.unsupported_reason(p, DType::F32);  // the plug-in's own answer
  EXPECT_TRUE(!plain || plain->find("predates") == std::string::npos) << *plain;
  p.alibi = AlibiSlopes::PerHead;
  EXPECT_EQ(old_plugin.unsupported_reason(p, DType::F32),
            "the backend was built for ABI 2.0, which predates ALiBi (ABI 2.3)");
  p.alibi = AlibiSlopes::None;
  p.sinks = true;
  EXPECT_EQ(old_plugin.unsupported_reason(p, DType::F32),
            "the backend was built for ABI 2.0, which predates attention sinks (ABI 2.3)");
  attncheck_attention_tensors none{};
  none.struct_size = sizeof none;
  try {
    old_plugin.forward(p, none);
    ADD_FAILURE() << "forward reached a 2.0 plug-in with sinks";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckNotSupported);
  }
}

// A 2.3 BackendImpl declines, before its own code runs, every option its options() does not list.
class NoOptions final : public impl::BackendImpl {
 public:
  attncheck_numerics_profile profile(DLDataType) const override { return to_abi(NumericsProfile{}); }
  void check_supported(const attncheck_problem&, DLDataType, DLDeviceType) const override {}
  void forward(const attncheck_problem&, const attncheck_attention_tensors&) override { ADD_FAILURE() << "forward ran"; }
};

TEST(BackendImpl, UnlistedOptionsAreDeclinedByTheTable) {
  Backend backend(impl::make_backend_table<NoOptions>("no-options", "implements no option"), "test");
  Problem p;
  EXPECT_FALSE(backend.unsupported_reason(p, DType::F32).has_value());
  p.alibi = AlibiSlopes::PerBatchHead;
  p.sinks = true;
  // The handle reads the table's problem_options and never sends the problem…
  EXPECT_EQ(backend.table()->problem_options, 0u);
  EXPECT_EQ(backend.unsupported_reason(p, DType::F32),
            "the backend does not declare ALiBi and attention sinks in its table's problem_options");
  // …and a caller that sends it anyway gets the table's own decline.
  const attncheck_problem a = to_abi(p);
  char reason[256] = {};
  EXPECT_EQ(backend.table()->supports(backend.table(), &a, to_dlpack(DType::F32), kDLCPU, reason, sizeof reason),
            kAttncheckNotSupported);
  EXPECT_STREQ(reason, "this backend does not implement ALiBi and attention sinks");
  attncheck_attention_tensors none{};
  none.struct_size = sizeof none;
  try {
    backend.forward(p, none);
    ADD_FAILURE() << "forward accepted an option it does not implement";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckNotSupported);
  }
}

// The 2.3 fields round-trip, and the layer problem keeps the frozen 2.0 layout: its core carries
// neither option, and one asked for is refused rather than dropped.
TEST(Conversions, InferenceOptionsRoundTripAndStayOutOfTheLayer) {
  Problem p = Problem::of_shape(2, 4, 2, 3, 5, 8, 8);
  p.alibi = AlibiSlopes::PerBatchHead;
  p.sinks = true;
  const attncheck_problem a = to_abi(p);
  EXPECT_EQ(a.struct_size, sizeof(attncheck_problem));
  EXPECT_EQ(a.alibi, kAttncheckAlibiPerBatchHead);
  EXPECT_EQ(a.has_sinks, 1);
  Problem back = from_abi(a);
  back.scale.reset();
  EXPECT_EQ(back, p);
  attncheck_problem short_one = a;
  short_one.struct_size = static_cast<std::uint32_t>(ATTNCHECK_PROBLEM_SIZE_2_0);  // a 2.0 writer
  EXPECT_FALSE(from_abi(short_one).has_alibi());
  EXPECT_FALSE(from_abi(short_one).sinks);
  static_assert(sizeof(attncheck_problem_2_0) == ATTNCHECK_PROBLEM_SIZE_2_0 + (ATTNCHECK_PROBLEM_SIZE_2_0 % 8 ? 4 : 0));
  static_assert(offsetof(attncheck_layer_problem, model_dim) == 8 + sizeof(attncheck_problem_2_0),
                "the layer's fields after its core must not move");
  LayerProblem layer;
  layer.attention = Problem::of_shape(1, 2, 2, 3, 3, 4, 4);
  layer.model_dim = 8;
  const attncheck_layer_problem l = to_abi(layer);
  const attncheck_problem core = attncheck_layer_core(&l);
  EXPECT_EQ(core.struct_size, ATTNCHECK_PROBLEM_SIZE_2_0);
  EXPECT_EQ(core.q_heads, 2);
  EXPECT_EQ(impl::alibi_of(core), kAttncheckAlibiNone);
  layer.attention.sinks = true;
  EXPECT_THROW(to_abi(layer), BackendError);
}

// ABI 2.4: the paged fields round-trip, a 2.3 writer's problem is contiguous, a table that
// predates them is told so, and one that does not declare them never gets one.
TEST(Conversions, PagedCachesRoundTripAndNeverReachAnOlderTable) {
  Problem p = Problem::of_shape(2, 4, 2, 1, 32, 8, 8);
  p.has_key_lengths = true;
  p.kv_storage = KvStorage::PagedHeadMajor;
  p.page_size = 16;
  const attncheck_problem a = to_abi(p);
  EXPECT_EQ(a.kv_storage, kAttncheckKvPagedHeadMajor);
  EXPECT_EQ(a.page_size, 16);
  Problem back = from_abi(a);
  back.scale.reset();
  EXPECT_EQ(back, p);
  attncheck_problem older = a;
  older.struct_size = static_cast<std::uint32_t>(ATTNCHECK_PROBLEM_SIZE_2_3);
  EXPECT_FALSE(from_abi(older).is_paged());
  EXPECT_FALSE(impl::is_paged(older));
  attncheck_problem bad = a;
  bad.page_size = 5;  // Lk = 32 is not whole pages of 5
  EXPECT_THROW(impl::check_problem(bad), impl::AbiError);

  Backend old_plugin(attncheck_c_mock_2_0_entry(), "c-mock-2.0");
  EXPECT_EQ(old_plugin.unsupported_reason(p, DType::F32),
            "the backend was built for ABI 2.0, which predates paged KV caches (ABI 2.4)");
  Backend no_options(impl::make_backend_table<NoOptions>("no-options", "implements no option"), "test");
  EXPECT_EQ(no_options.unsupported_reason(p, DType::F32),
            "the backend does not declare paged KV caches in its table's problem_options");
  LayerProblem layer;
  layer.attention = p;
  layer.model_dim = 8;
  EXPECT_THROW(to_abi(layer), BackendError);
}

// ABI 2.5: a packed batch's key counts travel as cu_seqlens_k (has_key_lengths 0 in the ABI, set
// again on the way back), a 2.4 writer's problem is padded, a table that predates the field is
// told so, and a packed problem that names key lengths or a mask is refused.
TEST(Conversions, PackedBatchesRoundTripAndNeverReachAnOlderTable) {
  Problem p = Problem::of_shape(3, 4, 2, 9, 17, 8, 8);
  p.has_key_lengths = true;
  p.causal = true;
  p.alignment = Alignment::BottomRight;
  p.varlen = true;
  const attncheck_problem a = to_abi(p);
  EXPECT_EQ(a.varlen, 1);
  EXPECT_EQ(a.has_key_lengths, 0);
  EXPECT_NO_THROW(impl::check_problem(a));
  Problem back = from_abi(a);
  back.scale.reset();
  EXPECT_EQ(back, p);
  attncheck_problem older = a;
  older.struct_size = static_cast<std::uint32_t>(ATTNCHECK_PROBLEM_SIZE_2_4);
  EXPECT_FALSE(from_abi(older).varlen);
  EXPECT_FALSE(impl::is_varlen(older));
  attncheck_problem named_lengths = a;
  named_lengths.has_key_lengths = 1;
  EXPECT_THROW(impl::check_problem(named_lengths), impl::AbiError);
  EXPECT_THROW(from_abi(named_lengths), BackendError) << "from_abi refuses what check_problem refuses";
  attncheck_problem masked = a;
  masked.mask_kind = kAttncheckMaskBoolean;
  EXPECT_THROW(impl::check_problem(masked), impl::AbiError);
  attncheck_problem offset = a;
  offset.alignment = kAttncheckAlignOffset;
  EXPECT_THROW(impl::check_problem(offset), impl::AbiError);
  EXPECT_EQ(impl::varlen_diagonal_offset(a, 2, 7), 5);
  EXPECT_EQ(impl::varlen_diagonal_offset(older, 2, 7), 5) << "bottom-right either way; only a packed call asks";

  Backend old_plugin(attncheck_c_mock_2_0_entry(), "c-mock-2.0");
  EXPECT_EQ(old_plugin.unsupported_reason(p, DType::F32),
            "the backend was built for ABI 2.0, which predates packed variable-length batches (ABI 2.5)");
  Backend no_options(impl::make_backend_table<NoOptions>("no-options", "implements no option"), "test");
  EXPECT_EQ(no_options.unsupported_reason(p, DType::F32),
            "the backend does not declare packed variable-length batches in its table's problem_options");
  LayerProblem layer;
  layer.attention = p;
  layer.model_dim = 8;
  EXPECT_THROW(to_abi(layer), BackendError);
}

// The offsets of a packed call are checked on the host: from 0, each count within its capacity,
// the last one the packed tensor's token count.
TEST(Conversions, CuSeqlensAreCheckedAsOffsets) {
  attncheck_problem p = to_abi([] {
    Problem q = Problem::of_shape(2, 1, 1, 4, 4, 1, 1);
    q.has_key_lengths = true;
    q.varlen = true;
    return q;
  }());
  const auto offsets = [](std::vector<std::int32_t>& values) {
    impl::TensorArg t;
    t.data = reinterpret_cast<const char*>(values.data());
    t.dtype = impl::kI32;
    t.ndim = 1;
    t.shape = {static_cast<std::int64_t>(values.size()), 0, 0, 0};
    t.strides = {1, 0, 0, 0};
    return t;
  };
  std::vector<std::int32_t> good{0, 3, 7}, not_from_zero{1, 3, 7}, too_long{0, 5, 7}, shrinking{0, 3, 2};
  EXPECT_EQ(impl::checked_cu_seqlens(p, offsets(good), "cu_seqlens_q", 4, 7), (std::vector<std::int64_t>{0, 3, 7}));
  EXPECT_THROW(impl::checked_cu_seqlens(p, offsets(good), "cu_seqlens_q", 4, 8), impl::AbiError) << "a total of 8 tokens";
  EXPECT_THROW(impl::checked_cu_seqlens(p, offsets(not_from_zero), "cu_seqlens_q", 4, 7), impl::AbiError);
  EXPECT_THROW(impl::checked_cu_seqlens(p, offsets(too_long), "cu_seqlens_q", 4, 7), impl::AbiError) << "5 > Lq = 4";
  EXPECT_THROW(impl::checked_cu_seqlens(p, offsets(shrinking), "cu_seqlens_q", 4, 2), impl::AbiError);
}

// c_abi_mock.c builds its table as C; here the same header is read as C++.
TEST(CAbi, TableBuiltInCDrivesThroughTheHandle) {
  static_assert(offsetof(attncheck_backend, abi_version) == 0, "abi_version is the frozen first field");
  Backend backend(attncheck_c_mock_entry(), "c-mock");
  EXPECT_EQ(backend.name(), "c-mock");
  EXPECT_EQ(backend.abi_version().major, static_cast<uint32_t>(ATTNCHECK_ABI_VERSION_MAJOR));
  EXPECT_EQ(backend.table()->struct_size, sizeof(attncheck_backend));
  EXPECT_FALSE(backend.has_layer());

  const auto profile = backend.profile(DType::F32);
  ASSERT_TRUE(profile.has_value());
  EXPECT_EQ(profile->empty_row, EmptyRowConvention::NaN);  // what the C file declares
  EXPECT_FALSE(backend.profile(DType::F16).has_value());

  Problem p;
  p.q_len = 3, p.k_len = 2, p.v_dim = 2;
  const auto reason = backend.unsupported_reason(p, DType::F32, kDLCPU);
  ASSERT_TRUE(reason.has_value());
  EXPECT_NE(reason->find("Lk = 1 only"), std::string::npos) << *reason;

  p.k_len = 1;
  EXPECT_FALSE(backend.unsupported_reason(p, DType::F32, kDLCPU).has_value());
  std::vector<float> q(3, 0.f), k(1, 0.f), v{1.5f, -2.f}, out(6, 0.f);
  std::int64_t qs[4] = {1, 1, 3, 1}, ks[4] = {1, 1, 1, 1}, vs[4] = {1, 1, 1, 2}, os[4] = {1, 1, 3, 2};
  auto tensor = [](float* data, std::int64_t* shape) {
    DLTensor t{};
    t.data = data, t.device = {kDLCPU, 0}, t.ndim = 4, t.dtype = {kDLFloat, 32, 1}, t.shape = shape;
    return t;
  };
  DLTensor tq = tensor(q.data(), qs), tk = tensor(k.data(), ks), tv = tensor(v.data(), vs), to = tensor(out.data(), os);
  attncheck_attention_tensors t{sizeof(attncheck_attention_tensors), nullptr, &tq, &tk, &tv, nullptr, nullptr, &to, nullptr};
  backend.forward(p, t);
  // One key: every row's output is that key's value row (the mock's whole contract).
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.f, 1.5f, -2.f, 1.5f, -2.f}));

  p.k_len = 2;
  try {
    backend.forward(p, t);
    FAIL() << "forward should fail for Lk = 2";
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckNotSupported);
    EXPECT_STREQ(e.what(), "c-mock: forward returned 'not supported': the C mock handles Lk = 1 only");
  }
}

TEST(Conversions, ProblemRoundTripsThroughTheAbi) {
  Problem p;
  p.batch = 2, p.q_heads = 12, p.kv_heads = 1, p.q_len = 7, p.k_len = 40, p.qk_dim = 48, p.v_dim = 80;
  p.scale = 0.25, p.softcap = 30, p.causal = true, p.alignment = Alignment::Offset, p.diagonal_offset = 33;
  p.window_left = 5, p.window_right = 0, p.mask = MaskKind::Additive;
  p.mask_batch = 1, p.mask_heads = 12, p.mask_q_len = 1, p.mask_k_len = 39, p.has_key_lengths = true;
  const attncheck_problem a = to_abi(p);
  EXPECT_EQ(a.alignment, kAttncheckAlignOffset);
  EXPECT_EQ(a.mask_kind, kAttncheckMaskAdditive);
  EXPECT_EQ(a.mask_shape[3], 39);
  EXPECT_EQ(from_abi(a), p);
}

TEST(Conversions, DefaultScaleIsResolvedForTheAbi) {
  Problem p;
  p.qk_dim = 64;
  // problem.h: an unset scale means 1/sqrt(Dk) = 1/8; the ABI carries the applied value.
  EXPECT_EQ(to_abi(p).scale, 0.125);
  EXPECT_EQ(from_abi(to_abi(p)).scale, std::optional<double>(0.125));
}

TEST(Conversions, UnknownEnumeratorsNameTheField) {
  attncheck_problem a = to_abi(Problem{});
  a.alignment = 9;
  try {
    (void)from_abi(a);
    FAIL();
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckInvalidProblem);
    EXPECT_STREQ(e.what(), "problem.alignment: 9 is not an attncheck_alignment (0..3)");
  }
  a = to_abi(Problem{});
  a.mask_kind = -1;
  EXPECT_THROW((void)from_abi(a), BackendError);
}

TEST(Conversions, DtypesMapBothWays) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F64}) EXPECT_EQ(from_dlpack(to_dlpack(d)), d);
  EXPECT_EQ(to_dlpack(DType::BF16).code, kDLBfloat);
  EXPECT_FALSE(from_dlpack(DLDataType{kDLInt, 32, 1}).has_value());
  EXPECT_FALSE(from_dlpack(DLDataType{kDLFloat, 32, 4}).has_value());  // vector lanes are not an element type
}

TEST(Conversions, ProfileRoundTripsAndBadFieldsAreNamed) {
  NumericsProfile p;
  p.input = DType::BF16, p.probability = DType::BF16, p.output = DType::BF16, p.softmax_block = 128;
  p.accumulation_rounding = Rounding::TowardZero, p.products_per_rounding = 16, p.deterministic = true;
  p.empty_row = EmptyRowConvention::MeanOfV, p.writes_lse = true, p.exp_relative_error = 0x1p-21;
  EXPECT_EQ(from_abi(to_abi(p)), p);

  attncheck_numerics_profile a = to_abi(p);
  a.score_dtype = DLDataType{kDLInt, 8, 1};
  try {
    (void)from_abi(a);
    FAIL();
  } catch (const BackendError& e) {
    EXPECT_STREQ(e.what(), "profile.score_dtype: DLPack dtype (code 0 bits 8 lanes 1) is not one attncheck knows (f32, f16, bf16, f64)");
  }
  a = to_abi(p);
  a.products_per_rounding = 0;
  EXPECT_THROW((void)from_abi(a), BackendError);
  a = to_abi(p);
  a.struct_size = 8;  // a table from a build that predates most fields
  EXPECT_THROW((void)from_abi(a), BackendError);
}

TEST(Conversions, Abi21ProfileFieldsRoundTrip) {
  NumericsProfile p;
  p.input = DType::F32, p.probability = DType::F16, p.accumulator = DType::F16;
  p.query_rounding = p.key_rounding = p.value_rounding = DType::F16;
  p.mask_dtype = DType::F16, p.row_sum_accumulator = DType::F32;
  p.keys_per_partial_sum = 64, p.kv_splits = 2;
  p.empty_row_lse = EmptyRowLse::Zero, p.masked_keys_weighted_by_zero = true;
  EXPECT_EQ(from_abi(to_abi(p)), p);
  EXPECT_EQ(p.describe(),
            "in=f32 S=f32 P=f16 acc=f16 out=f32 RN k0=1 block=0 zeros Q=f16 K=f16 V=f16 mask=f16 sum=f32 partial=64 "
            "splits=2 lse0=zero masked*0");

  attncheck_numerics_profile a = to_abi(p);
  a.empty_row_lse = 7;
  EXPECT_THROW((void)from_abi(a), BackendError);
  a = to_abi(p);
  a.kv_splits = -1;
  EXPECT_THROW((void)from_abi(a), BackendError);
}

// A plug-in built against ABI 2.0 writes a shorter profile: the 2.1 fields it does not cover
// keep their documented defaults, whatever bytes follow it (backend.h, rule 2).
TEST(Conversions, Abi20SizedProfileKeepsTheDefaultsOfLaterFields) {
  NumericsProfile p;
  p.input = DType::F16, p.probability = DType::F16, p.output = DType::F16;
  attncheck_numerics_profile a = to_abi(p);
  a.query_rounding = DLDataType{kDLFloat, 16, 1};
  a.empty_row_lse = kAttncheckEmptyRowLseUnspecified;
  a.masked_keys_weighted_by_zero = 1;
  a.kv_splits = 4;
  a.struct_size = static_cast<std::uint32_t>(ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0);
  EXPECT_EQ(from_abi(a), p);
  a.struct_size = static_cast<std::uint32_t>(ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0 - 1);
  EXPECT_THROW((void)from_abi(a), BackendError);
}

// The profile is written into the suite's memory: a 2.0 suite's zero-initialised buffer
// (struct_size 0) holds only the 2.0 fields, and a backend of a later minor must not write past
// them (backend.h, attncheck_write_profile).
TEST(Conversions, AProfileIsWrittenNoFurtherThanTheSuitesBuffer) {
  Backend backend = open_backend("cpu-naive");
  attncheck_numerics_profile buffer;
  std::memset(&buffer, 0xAB, sizeof buffer);
  buffer.struct_size = 0;  // as a 2.0 suite's `attncheck_numerics_profile p{}` has it
  ASSERT_EQ(backend.table()->get_profile(backend.table(), to_dlpack(DType::F32), &buffer), kAttncheckOk);
  EXPECT_EQ(buffer.struct_size, ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0);
  const auto* bytes = reinterpret_cast<const unsigned char*>(&buffer);
  for (std::size_t i = ATTNCHECK_NUMERICS_PROFILE_SIZE_2_0; i < sizeof buffer; ++i)
    ASSERT_EQ(bytes[i], 0xAB) << "byte " << i << " past the 2.0 profile was written";
  EXPECT_EQ(from_abi(buffer), *backend.profile(DType::F32));  // cpu-naive sets no 2.1 field

  std::memset(&buffer, 0, sizeof buffer);
  buffer.struct_size = sizeof buffer;
  ASSERT_EQ(backend.table()->get_profile(backend.table(), to_dlpack(DType::F32), &buffer), kAttncheckOk);
  EXPECT_EQ(buffer.struct_size, sizeof buffer);
}

TEST(Conversions, StatusNames) {
  EXPECT_EQ(status_name(kAttncheckOk), "ok");
  EXPECT_EQ(status_name(kAttncheckNotSupported), "not supported");
  EXPECT_EQ(status_name(kAttncheckInvalidProblem), "invalid problem");
  EXPECT_EQ(status_name(kAttncheckInternalError), "internal error");
}

// backend_impl.h: exceptions never cross the table.
class Throwing final : public impl::BackendImpl {
 public:
  attncheck_numerics_profile profile(DLDataType) const override { throw std::runtime_error("boom"); }
  void check_supported(const attncheck_problem&, DLDataType, DLDeviceType) const override {
    impl::unsupported("never, on purpose");
  }
  void forward(const attncheck_problem&, const attncheck_attention_tensors&) override { throw 42; }
};

TEST(BackendImpl, ExceptionsBecomeStatusesAndMessages) {
  Backend b(impl::make_backend_table<Throwing>("throwing", nullptr), "test");
  try {
    (void)b.profile(DType::F32);
    FAIL();
  } catch (const BackendError& e) {
    EXPECT_EQ(e.status(), kAttncheckInternalError);
    EXPECT_STREQ(e.what(), "throwing: get_profile returned 'internal error': throwing: boom");
  }
  EXPECT_EQ(b.unsupported_reason(Problem{}, DType::F32, kDLCPU), std::optional<std::string>("never, on purpose"));
  try {
    attncheck_attention_tensors tensors{};
    tensors.struct_size = sizeof tensors;
    b.forward(Problem{}, tensors);
    FAIL();
  } catch (const BackendError& e) {
    EXPECT_STREQ(e.what(), "throwing: forward returned 'internal error': throwing: unknown exception");
  }
  EXPECT_FALSE(b.has_layer());
}

TEST(BackendImpl, TensorChecksNameTensorAndDimension) {
  std::int64_t shape[4] = {1, 2, 5, 8};
  DLTensor t{};
  float data[80] = {};
  t.data = data, t.device = {kDLCPU, 0}, t.ndim = 4, t.dtype = impl::kF32, t.shape = shape;
  try {
    (void)impl::check_cpu_tensor(&t, "k", {1, 2, 7, 8}, {"batch", "kv heads", "key length", "head dim"}, {impl::kF32});
    FAIL();
  } catch (const impl::AbiError& e) {
    EXPECT_STREQ(e.what(), "k: dim 2 (key length) is 5, expected 7");
  }
  try {
    (void)impl::check_cpu_tensor(&t, "q", {1, 2, 5, 8}, {}, {impl::kF16, impl::kBF16});
    FAIL();
  } catch (const impl::AbiError& e) {
    EXPECT_STREQ(e.what(), "q: dtype is float32, expected float16 or bfloat16");
  }
  const impl::TensorArg a = impl::check_cpu_tensor(&t, "q", {1, 2, 5, 8}, {}, {impl::kF32});
  EXPECT_EQ(a.strides, (std::array<std::int64_t, 4>{80, 40, 8, 1}));  // NULL strides mean compact row-major
}

}  // namespace
}  // namespace attncheck
