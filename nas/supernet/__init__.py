"""Weight sharing (issue #7, in progress): one set of largest weights per block position and family, from which
every genome of a space runs. See ``nas.supernet.supernet``."""
from nas.supernet.supernet import Supernet, SupernetCoverageError

__all__ = ["Supernet", "SupernetCoverageError"]
