// The built-in reward modules, built by the registry in reward.cpp. Each factory checks its section and throws
// std::invalid_argument naming the key of a bad parameter.
#pragma once

#include <memory>

#include "introspect/config/schema.h"
#include "introspect/reward/reward.h"

namespace introspect::reward {

std::unique_ptr<RewardModule> make_math_module(const config::MathRewardConfig& config);
std::unique_ptr<RewardModule> make_format_module(const config::FormatRewardConfig& config);
std::unique_ptr<RewardModule> make_overlong_module(const config::OverlongRewardConfig& config);
std::unique_ptr<RewardModule> make_external_module(const config::ExternalRewardConfig& config);

}  // namespace introspect::reward
