// The list of property families. Adding a property: a new file in properties/families/ whose
// last function returns its PropertyDefs, plus one line here.
#include "attncheck/property.h"

namespace attncheck {
namespace props {
std::vector<PropertyDef> conformance_properties();
std::vector<PropertyDef> normalization_properties();
std::vector<PropertyDef> independence_properties();
std::vector<PropertyDef> invariance_properties();
std::vector<PropertyDef> causality_properties();
std::vector<PropertyDef> determinism_properties();
std::vector<PropertyDef> backward_properties();
std::vector<PropertyDef> shapes_properties();
std::vector<PropertyDef> toy_properties();
std::vector<PropertyDef> layer_properties();
std::vector<PropertyDef> inference_properties();
std::vector<PropertyDef> paged_properties();
std::vector<PropertyDef> varlen_properties();
std::vector<PropertyDef> fp8_properties();
}  // namespace props

const std::vector<PropertyDef>& all_properties() {
  // Built once, immutable afterwards: a function-local constant, not mutable global state.
  static const std::vector<PropertyDef> properties = [] {
    std::vector<PropertyDef> all;
    // Run order. The families that judge against the reference and against the kernel itself
    // (repeatability, before the layer's properties, whose evidence cannot name it), then the
    // backward pass (skipped at once by a backend without one, and a broken backward is caught
    // as fast as a broken forward), then the whole layer, come first: between them they catch
    // every mutant of backends/mutants within about a second of a quick run, and a broken kernel
    // should fail fast. The metamorphic families follow; they say more about what is wrong.
    // The inference options (ALiBi, sinks) follow the backward family: only their properties
    // draw them, so a kernel that gets one of them wrong is caught there first; so do paged caches and packed batches.
    for (auto family : {props::conformance_properties, props::determinism_properties, props::backward_properties,
                        props::inference_properties, props::paged_properties,
                        props::varlen_properties, props::fp8_properties, props::layer_properties, props::toy_properties,
                        props::normalization_properties, props::independence_properties, props::invariance_properties,
                        props::causality_properties, props::shapes_properties})
      for (auto& property : family()) all.push_back(std::move(property));
    return all;
  }();
  return properties;
}

}  // namespace attncheck
