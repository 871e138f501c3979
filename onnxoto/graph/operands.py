"""What a node reads: its inputs and what its subgraphs read (which inputs are values, not shapes or
indices, is an operator fact: ops.is_value_input)."""


def node_reads(node):
    """The names `node` reads: its inputs and whatever its subgraphs (If/Loop/Scan bodies) read,
    which includes tensors of the outer graph they use without declaring them."""
    names = [i for i in node.input if i]
    for attribute in node.attribute:
        for body in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:  # GRAPH, GRAPHS
            for inner in body.node:
                names += node_reads(inner)
    return names
