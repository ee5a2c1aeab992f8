// A consumer of the fixture file format alone (attncheck::fixture_format): reads a fixture,
// converts its tensors and checks that q matches the problem the file records. It links nothing
// of the property engine, which is the point: tooling that only reads or writes fixtures (a
// converter, a dataloader) needs the reference's types and the format, nothing else.
//
//   read_fixture FILE.safetensors
//
// Exit 0 with a one-line summary; 1 with the reader's one-line error.
#include <attncheck/fixture.h>

#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE.safetensors\n", argv[0]);
    return 2;
  }
  try {
    const attncheck::Fixture fixture = attncheck::read_fixture(argv[1]);
    const attncheck::Problem& p = fixture.problem;
    const attncheck::HostTensor q = attncheck::to_host_tensor(fixture.tensors.at("q"));
    if (q.shape != attncheck::Shape4{p.batch, p.q_heads, p.q_len, p.qk_dim}) {
      std::fprintf(stderr, "%s: q has shape %s, but the problem is %s\n", argv[1], attncheck::shape_string(q.shape).c_str(),
                   p.describe().c_str());
      return 1;
    }
    std::printf("%s: %s fixture, %s inputs, %zu tensors, problem %s\n", argv[1],
                std::string(attncheck::fixture_kind_name(fixture.kind)).c_str(),
                std::string(attncheck::dtype_name(fixture.input_dtype)).c_str(), fixture.tensors.size(),
                p.describe().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
