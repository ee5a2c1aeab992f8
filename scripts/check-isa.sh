#!/usr/bin/env bash
# Checks that ELF files (the attncheck executable, its libraries, backend plug-ins) contain no
# instruction beyond x86-64-v2 outside code that is only called after a run-time CPU check: the
# reference's kernels in attncheck::detail::isa_avx2 / isa_avx512, and cpu-flash's AVX2 and
# AVX-512 kernels. So an installed attncheck starts, and computes, on any x86-64-v2 CPU.
#
#   scripts/check-isa.sh FILE...
#
# What counts as beyond v2: any VEX or EVEX encoded instruction (AVX and later: mnemonics starting
# with "v", or naming ymm, zmm or mask registers) and the BMI1/BMI2/MOVBE/LZCNT instructions.
# tzcnt is allowed: GCC emits it as `rep bsf`, which older CPUs run as bsf.
# Exit status: 0 clean, 1 findings (each printed as file: function: instruction), 2 usage.
set -euo pipefail
(($#)) || { echo "usage: check-isa.sh FILE..." >&2; exit 2; }
command -v objdump >/dev/null || { echo "check-isa: objdump (binutils) is needed" >&2; exit 2; }

status=0
for file in "$@"; do
  [[ -f $file ]] || { echo "check-isa: $file: no such file" >&2; exit 2; }
  findings=$(objdump -d --no-show-raw-insn -C "$file" | awk -v file="$file" '
    /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<") + 1); sub(/>:$/, "", fn); next }
    /^ *[0-9a-f]+:\t/ {
      split($0, part, "\t"); insn = part[2]; split(insn, word, " "); op = word[1]
      if (op == "rep" || op == "lock" || op == "notrack" || op == "bnd" || op == "data16") op = word[2]
      beyond = (op ~ /^v/ && op != "verr" && op != "verw") || insn ~ /%[yz]mm|%k[0-7]/ ||
               op ~ /^(andn|bextr|blsi|blsmsk|blsr|bzhi|pdep|pext|rorx|sarx|shlx|shrx|mulx|movbe|lzcnt)$/
      if (!beyond) next
      # Dispatched code: the reference kernels of the wider builds, cpu-flash kernel_avx*.cpp.
      if (fn ~ /attncheck::detail::isa_avx(2|512)::/ || fn ~ /attncheck::cpu_flash::.*([Aa]vx2|[Aa]vx512)/) next
      if (!(fn in seen)) { seen[fn] = 1; print file ": " fn ": " insn }
    }')
  if [[ -n $findings ]]; then
    echo "$findings"
    status=1
  fi
done
((status == 0)) && echo "check-isa: no instruction beyond x86-64-v2 outside dispatched kernels in $# file(s)"
exit $status
