"""Deterministic synthetic prose for the old-sweep fixture (no text from other projects)."""
import random, sys
from pathlib import Path
WORDS = ("the a model loss budget token layer width depth step rate curve grid size data run fit law "
         "small large early late fast slow train test value point scale power sweep optimum compute "
         "parameter sequence batch learning warm cool decay stable profile envelope parabola vertex").split()
def main(out):
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    for i in range(40):
        sents = []
        for _ in range(rng.randint(12, 24)):
            n = rng.randint(5, 14)
            s = " ".join(rng.choice(WORDS) for _ in range(n))
            sents.append(s[0].upper() + s[1:] + rng.choice(".!?"))
        (out / f"doc_{i:02d}.txt").write_text(" ".join(sents) + "\n")
main(sys.argv[1])
