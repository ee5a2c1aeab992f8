// The multi-head attention layer: each head projects X with its own W_Q^(h), W_K^(g), W_V^(g)
// and the concatenated heads go through W_O.
#include "common.h"

namespace attncheck::props {

std::vector<PropertyDef> layer_properties() { return {}; }

}  // namespace attncheck::props
